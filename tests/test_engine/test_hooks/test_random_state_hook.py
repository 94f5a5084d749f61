import glob
import os.path as osp
import random

import numpy as np
import torch
from mmengine.runner import Runner

from mmseg_fnm.engine.hooks import RandomStateHook
from mmseg_fnm.utils import get_random_state, load_safe, make_checkpoint_safe


def test_validation_leaves_the_random_states():
    hook = RandomStateHook()
    before = get_random_state()
    hook.before_val(None)
    torch.rand(5), np.random.rand(2), random.random()
    hook.after_val(None)
    after = get_random_state()
    assert torch.equal(before['torch'], after['torch'])
    assert torch.equal(before['numpy']['key'], after['numpy']['key'])
    assert before['numpy']['pos'] == after['numpy']['pos']
    assert before['python'] == after['python']


def test_checkpoints_hold_the_states_and_older_ones_resume(demo_cfg, tmp_path):
    cfg = demo_cfg('basic', max_iters=2, batch_size=2, validate=False)
    cfg.model.decode_head.dropout_ratio = 0.1
    cfg.default_hooks.checkpoint.interval = 1
    Runner.from_cfg(cfg).train()
    checkpoint = load_safe(osp.join(cfg.work_dir, 'iter_1.pth'))
    states = checkpoint['random_states']
    assert len(states) == 1
    assert set(states[0]) == {'python', 'numpy', 'torch', 'cuda'}
    later = load_safe(osp.join(cfg.work_dir, 'iter_2.pth'))
    # Dropout drew from torch's generator in between.
    assert not torch.equal(states[0]['torch'],
                           later['random_states'][0]['torch'])

    # A checkpoint written without the hook resumes, with a warning.
    del checkpoint['random_states']
    old = str(tmp_path / 'old.pth')
    torch.save(make_checkpoint_safe(checkpoint), old)
    resumed = demo_cfg(
        'basic',
        work_dir=str(tmp_path / 'resumed'),
        max_iters=2,
        batch_size=2,
        validate=False)
    resumed.resume = True
    resumed.load_from = old
    runner = Runner.from_cfg(resumed)
    runner.train()
    assert runner.iter == 2
    log, = glob.glob(osp.join(resumed.work_dir, '*', '*.log'))
    with open(log) as f:
        assert 'holds no random states' in f.read()


def test_epoch_based_resume_is_bit_identical(demo_cfg, tmp_path):
    """Epoch-based loops: the states are restored before the next epoch's
    data loader iterator is made (which draws from torch's generator)."""

    def epoch_cfg(name, max_epochs):
        cfg = demo_cfg(
            'basic',
            work_dir=str(tmp_path / name),
            batch_size=4,
            validate=False)
        cfg.model.decode_head.dropout_ratio = 0.1
        cfg.train_dataloader.sampler = dict(
            type='DefaultSampler', shuffle=True)
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
        cfg.param_scheduler = [
            dict(
                type='PolyLR',
                eta_min=1e-4,
                power=0.9,
                by_epoch=True,
                begin=0,
                end=2)
        ]
        cfg.default_hooks.checkpoint = dict(
            type='CheckpointHook', by_epoch=True, interval=1)
        cfg.default_hooks.logger.log_metric_by_epoch = True
        return cfg

    Runner.from_cfg(epoch_cfg('straight', 2)).train()
    Runner.from_cfg(epoch_cfg('interrupted', 1)).train()
    resumed = epoch_cfg('interrupted', 2)
    resumed.resume = True
    runner = Runner.from_cfg(resumed)
    runner.train()
    assert runner.epoch == 2
    a = load_safe(osp.join(tmp_path, 'straight', 'epoch_2.pth'))
    b = load_safe(osp.join(tmp_path, 'interrupted', 'epoch_2.pth'))
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key

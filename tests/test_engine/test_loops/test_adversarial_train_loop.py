"""Adversarial train loops in a real Runner on the demo data."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import HOOKS


@HOOKS.register_module()
class _RecordAttackHook(Hook):
    """Test helper: remember the adversarial choices and radii."""
    records = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        record = runner.train_loop.last_attack
        type(self).records.append(
            (runner.iter, list(record.indices), record.eps.tolist()))


@HOOKS.register_module()
class _RecordWeightsHook(Hook):
    """Test helper: the weights before training and after every iteration.
    """
    weights = []

    def before_train(self, runner):
        type(self).weights.append(weights_of(runner))

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        type(self).weights.append(weights_of(runner))


def train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def weights_of(runner):
    return {
        k: v.detach().clone()
        for k, v in runner.model.state_dict().items()
    }


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_adv_prob_zero_matches_the_stock_loop(demo_cfg):
    stock = train(demo_cfg('basic', max_iters=3))
    cfg = demo_cfg('fgsm', max_iters=3)
    cfg.train_cfg.adv_prob = 0.0
    adversarial = train(cfg)
    assert type(adversarial.train_loop).__name__ == \
        'AdversarialIterBasedTrainLoop'
    assert adversarial.train_loop.last_attack.indices == []
    assert_same_weights(weights_of(stock), weights_of(adversarial))


def test_adversarial_training_changes_the_update(demo_cfg):
    stock = train(demo_cfg('basic', max_iters=2))
    cfg = demo_cfg('fnm', max_iters=2)
    cfg.train_cfg.adv_prob = 1.0
    runner = train(cfg)
    record = runner.train_loop.last_attack
    assert record.indices == [0, 1, 2, 3] and record.fraction == 1.0
    # an untrained model misclassifies some samples already: eps 0 there
    assert (record.eps >= 0).all() and (record.eps > 0).any()
    assert record.seconds > 0
    changed = [
        k for k, v in weights_of(runner).items()
        if v.is_floating_point() and not torch.equal(v,
                                                     weights_of(stock)[k])
    ]
    assert changed


def test_choices_are_reproducible_and_follow_adv_prob(demo_cfg):
    _RecordAttackHook.records = []
    cfg = demo_cfg('rfgsm', max_iters=6)
    cfg.custom_hooks = [dict(type='_RecordAttackHook')]
    train(cfg)
    first = list(_RecordAttackHook.records)
    _RecordAttackHook.records = []
    cfg = demo_cfg('rfgsm', max_iters=6, work_dir=cfg.work_dir + '_again')
    cfg.custom_hooks = [dict(type='_RecordAttackHook')]
    train(cfg)
    assert _RecordAttackHook.records == first
    chosen = sum(len(indices) for _, indices, _ in first)
    assert 0 < chosen < 6 * 4  # p = 0.5 over 24 samples
    radii = [eps for _, _, batch in first for eps in batch]
    assert len(set(radii)) == len(radii)  # RandomFGSM: one radius each
    assert all(0 <= eps <= 0.03 for eps in radii)


def test_resume_continues_identically(demo_cfg):
    _RecordAttackHook.records = []
    cfg = demo_cfg('fgsm', max_iters=4)
    cfg.default_hooks.checkpoint.interval = 2
    cfg.custom_hooks = [dict(type='_RecordAttackHook')]
    full = train(cfg)
    uninterrupted = list(_RecordAttackHook.records)
    checkpoint = osp.join(cfg.work_dir, 'iter_2.pth')
    assert osp.exists(checkpoint)
    # safe to load: no pickled code objects
    torch.load(checkpoint, weights_only=True)

    _RecordAttackHook.records = []
    resumed_cfg = demo_cfg(
        'fgsm', max_iters=4, work_dir=cfg.work_dir + '_resumed')
    resumed_cfg.custom_hooks = [dict(type='_RecordAttackHook')]
    resumed_cfg.resume = True
    resumed_cfg.load_from = checkpoint
    resumed = train(resumed_cfg)
    assert _RecordAttackHook.records == uninterrupted[2:]
    assert_same_weights(weights_of(full), weights_of(resumed))


def test_epoch_based_loop(demo_cfg):
    cfg = demo_cfg('fnm')
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    cfg.train_cfg = dict(
        type='AdversarialEpochBasedTrainLoop',
        max_epochs=2,
        val_interval=2,
        attack=dict(type='FastNewton'),
        adv_prob=0.5)
    cfg.param_scheduler = [
        dict(type='PolyLR', power=0.9, by_epoch=True, begin=0, end=2)
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=True, interval=2)
    cfg.default_hooks.logger.log_metric_by_epoch = True
    runner = train(cfg)
    assert runner.epoch == 2 and runner.iter == 2 * 16 // 4
    assert osp.exists(osp.join(cfg.work_dir, 'epoch_2.pth'))


def test_gradient_accumulation_steps_only_on_the_real_loss(demo_cfg):
    _RecordWeightsHook.weights = []
    cfg = demo_cfg('bim3', max_iters=4)
    cfg.train_cfg.adv_prob = 1.0
    cfg.optim_wrapper.accumulative_counts = 2
    cfg.custom_hooks = [dict(type='_RecordWeightsHook')]
    train(cfg)
    initial, *after = _RecordWeightsHook.weights
    # conv weights only: BN running statistics move in every forward
    params = [k for k, v in initial.items() if v.dim() == 4]
    # iteration 1 only accumulates: the attack passes stepped nothing
    assert all(torch.equal(after[0][k], initial[k]) for k in params)
    assert any(not torch.equal(after[1][k], after[0][k]) for k in params)
    assert all(torch.equal(after[2][k], after[1][k]) for k in params)


def test_attack_statistics_reach_the_visualizer(demo_cfg):
    cfg = demo_cfg('fnm', max_iters=4)
    cfg.train_cfg.adv_prob = 1.0
    cfg.custom_hooks = [dict(type='AdversarialStatsHook', loss_interval=2)]
    train(cfg)
    [scalars
     ] = glob.glob(osp.join(cfg.work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f]
    keys = set().union(*logged)
    for key in ('adv/fraction', 'adv/time', 'adv/eps_mean', 'adv/eps_min',
                'adv/eps_max', 'adv/loss', 'adv/clean_loss'):
        assert key in keys, key
    last = [r for r in logged if 'adv/loss' in r][-1]
    assert last['adv/fraction'] == 1.0 and last['adv/eps_mean'] > 0
    assert last['adv/loss'] > last['adv/clean_loss']


def test_robustness_monitor_logs_to_the_visualizer(demo_cfg):
    cfg = demo_cfg('fnm', max_iters=2)
    cfg.custom_hooks = [
        dict(
            type='RobustnessMonitorHook',
            interval=2,
            num_samples=2,
            bim=dict(type='BIM', eps=0.03, alpha=0.01, steps=3))
    ]
    runner = train(cfg)
    [hook] = [
        h for h in runner.hooks if type(h).__name__ == 'RobustnessMonitorHook'
    ]
    [measured] = hook.history
    assert 0 <= measured['bim'] <= measured['fgsm'] + 0.5
    [scalars
     ] = glob.glob(osp.join(cfg.work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f]
    monitor = [r for r in logged if 'monitor/bim_acc' in r]
    assert monitor and monitor[0]['step'] == 2
    assert monitor[0]['monitor/clean_acc'] == pytest.approx(measured['clean'])


@pytest.mark.parametrize('key, value, error, words', [
    ('adv_prob', 1.5, ValueError, 'adv_prob'),
    ('adv_prob', -0.1, ValueError, 'adv_prob'),
    ('adv_prob', 'half', ValueError, 'adv_prob'),
    ('attack', None, ValueError, 'train_cfg.attack'),
    ('attack', dict(type='PGD'), KeyError, 'FastNewton'),
    ('attack', dict(type='BIM', steps=0), ValueError, 'steps'),
    ('norm_mode', 'frozen', ValueError, 'norm_mode'),
])
def test_bad_train_cfg_is_refused_before_training(demo_cfg, key, value, error,
                                                  words):
    cfg = demo_cfg('fnm')
    cfg.train_cfg[key] = value
    runner = Runner.from_cfg(cfg)
    with pytest.raises(error, match=words):
        runner.train()
    assert not glob.glob(osp.join(cfg.work_dir, '*.pth'))


@pytest.mark.parametrize('hook, words', [
    (dict(type='RobustnessMonitorHook', interval=0), 'interval'),
    (dict(type='RobustnessMonitorHook', drop=1.5), 'drop'),
    (dict(type='RobustnessMonitorHook', action='panic'), 'action'),
    (dict(type='AdversarialStatsHook', loss_interval=-1), 'loss_interval'),
])
def test_bad_hook_settings_are_refused_at_build(demo_cfg, hook, words):
    cfg = demo_cfg('fnm')
    cfg.custom_hooks = [hook]
    with pytest.raises(ValueError, match=words):
        Runner.from_cfg(cfg)

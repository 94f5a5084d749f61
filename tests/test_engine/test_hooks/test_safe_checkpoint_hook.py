import glob
import os.path as osp
import time

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from mmseg_fnm.engine.hooks import SafeCheckpointHook


@HOOKS.register_module(force=True)
class _NumpyStateHook(Hook):
    """Stands for a hook that keeps numpy state in checkpoints."""

    priority = 'NORMAL'

    def __init__(self):
        self.loaded_type = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['numpy_state'] = np.arange(3, dtype=np.int32)

    def after_load_checkpoint(self, runner, checkpoint):
        self.loaded_type = type(checkpoint['numpy_state'])


def _build_runner(demo_cfg, tmp_path, name, **extra):
    cfg = demo_cfg('basic', work_dir=str(tmp_path / name), max_iters=2)
    # Validation puts numpy scalars (best score, eta) into the hub.
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.save_best = 'mIoU'
    cfg.custom_hooks = [dict(type='_NumpyStateHook')]
    cfg.experiment_name = f'{name}_{time.time_ns()}'
    cfg.merge_from_dict(extra)
    return Runner.from_cfg(cfg)


def test_hook_is_registered_and_runs_last():
    hook = HOOKS.build(dict(type='SafeCheckpointHook'))
    assert isinstance(hook, SafeCheckpointHook)
    assert hook.priority == 'LOWEST'


def test_runner_checkpoint_loads_weights_only_and_resumes(
        demo_cfg, tmp_path, one_thread):
    runner = _build_runner(demo_cfg, tmp_path, 'safe_hook_train')
    assert any(isinstance(h, SafeCheckpointHook) for h in runner.hooks)
    runner.train()
    path = osp.join(runner.work_dir, 'iter_2.pth')
    best = glob.glob(osp.join(runner.work_dir, 'best_mIoU_iter_*.pth'))
    assert len(best) == 1
    for checkpoint in (path, best[0]):
        saved = torch.load(checkpoint, weights_only=True)
        scalars = saved['message_hub']['log_scalars']
        assert 'train/loss' in scalars and 'val/mIoU' in scalars
        assert not isinstance(scalars['train/loss'], HistoryBuffer)
        # The live value is a numpy scalar.
        assert type(saved['message_hub']['runtime_info']['best_score']) is \
            float
    hub = runner.message_hub.log_scalars['train/loss']

    resumed = _build_runner(
        demo_cfg, tmp_path, 'safe_hook_resume', load_from=path, resume=True)
    resumed.load_or_resume()
    assert resumed.iter == 2
    buffer = resumed.message_hub.log_scalars['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    np.testing.assert_array_equal(buffer.data[0], hub.data[0])
    # Values other hooks keep are restored before their
    # after_load_checkpoint runs.
    numpy_hook = next(
        h for h in resumed.hooks if isinstance(h, _NumpyStateHook))
    assert numpy_hook.loaded_type is np.ndarray


def test_demo_fnm_checkpoint_is_safe_and_resumes(demo_cfg, tmp_path,
                                                 one_thread):
    """The project's own adversarial-training config, end to end."""
    cfg = demo_cfg('fnm', work_dir=str(tmp_path / 'fnm'), max_iters=2)
    cfg.experiment_name = f'demo_fnm_{time.time_ns()}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    path = osp.join(runner.work_dir, 'iter_2.pth')
    torch.load(path, weights_only=True)

    cfg = demo_cfg('fnm', work_dir=str(tmp_path / 'fnm_resumed'), max_iters=3)
    cfg.experiment_name = f'demo_fnm_resume_{time.time_ns()}'
    cfg.load_from, cfg.resume = path, True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 3
    assert len(resumed.message_hub.log_scalars['train/loss'].data[0]) == 3
    torch.load(osp.join(resumed.work_dir, 'iter_3.pth'), weights_only=True)

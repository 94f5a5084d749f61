import os.path as osp
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from mmseg_fnm.engine.hooks import SafeCheckpointHook
from mmseg_fnm.utils.testing import (write_tiny_seg_config,
                                     write_tiny_seg_dataset)


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


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build_runner(tmp_path, name, **extra):
    data_root = write_tiny_seg_dataset(str(tmp_path / 'data'), num_train=4)
    cfg_file = write_tiny_seg_config(
        str(tmp_path / f'{name}.py'),
        data_root,
        str(tmp_path / 'work'),
        max_iters=2,
        experiment_name=f'{name}_{time.time_ns()}',
        custom_hooks=[dict(type='_NumpyStateHook')],
        **extra)
    return Runner.from_cfg(Config.fromfile(cfg_file))


def test_hook_is_registered_and_runs_last():
    hook = HOOKS.build(dict(type='SafeCheckpointHook'))
    assert isinstance(hook, SafeCheckpointHook)
    assert hook.priority == 'LOWEST'


def test_runner_checkpoint_loads_weights_only_and_resumes(
        tmp_path, one_thread):
    runner = _build_runner(tmp_path, 'safe_hook_train')
    assert any(isinstance(h, SafeCheckpointHook) for h in runner.hooks)
    runner.train()
    path = osp.join(runner.work_dir, 'iter_2.pth')
    saved = torch.load(path, weights_only=True)
    scalars = saved['message_hub']['log_scalars']
    assert 'train/loss' in scalars
    assert not isinstance(scalars['train/loss'], HistoryBuffer)
    hub = runner.message_hub.log_scalars['train/loss']

    resumed = _build_runner(
        tmp_path, 'safe_hook_resume', load_from=path, resume=True)
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

import os
import os.path as osp
import socket
import subprocess
import sys
import time

import mmseg
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_fnm.utils import UnsafeCheckpointError, load_safe
from mmseg_fnm.utils.testing import write_tiny_seg_config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Processes started by these tests share the machine's few cores.
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _run(cmd, timeout=120, **kwargs):
    result = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=kwargs.pop('env', SUBPROCESS_ENV),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs)
    return result


def _train(tools_train, cfg_file, work_dir, max_iters, *options, resume=False):
    argv = [cfg_file, '--work-dir', work_dir]
    if resume:
        argv.append('--resume')
    argv += [
        '--cfg-options', f'train_cfg.max_iters={max_iters}',
        f'experiment_name=train_{time.time_ns()}', *options
    ]
    return tools_train.main(argv)


def _assert_same_training_state(a, b):
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    torch.testing.assert_close(a['optimizer'], b['optimizer'], rtol=0, atol=0)
    assert a['param_schedulers'] == b['param_schedulers']


def test_resume_equals_uninterrupted_training(tmp_path, tiny_data, tools_train,
                                              one_thread):
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny.py'),
        tiny_data,
        str(tmp_path / 'unused'),
        checkpoint_interval=2)
    interrupted = str(tmp_path / 'interrupted')
    straight = str(tmp_path / 'straight')

    _train(tools_train, cfg_file, interrupted, 2)
    runner = _train(tools_train, cfg_file, interrupted, 4, resume=True)
    assert runner.iter == 4
    _train(tools_train, cfg_file, straight, 4)

    # Our checkpoints need no unrestricted unpickling.
    a = torch.load(osp.join(interrupted, 'iter_4.pth'), weights_only=True)
    b = torch.load(osp.join(straight, 'iter_4.pth'), weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    _assert_same_training_state(a, b)
    # The resumed run continued the loss history it was resumed from.
    losses = [
        load_safe(osp.join(
            d,
            'iter_4.pth'))['message_hub']['log_scalars']['train/loss'].data[0]
        for d in (interrupted, straight)
    ]
    assert len(losses[0]) == 4
    np.testing.assert_array_equal(losses[0], losses[1])
    # ... and training did change the weights.
    first = torch.load(osp.join(interrupted, 'iter_2.pth'), weights_only=True)
    assert not all(
        torch.equal(first['state_dict'][k], a['state_dict'][k])
        for k in a['state_dict'])


def test_plain_mmengine_checkpoint_error_and_conversion(
        tmp_path, tiny_data, tools_train, tools_convert, one_thread):
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny.py'),
        tiny_data,
        str(tmp_path / 'plain'),
        max_iters=2)
    # What plain mmengine writes: the same config without the hook.
    cfg = Config.fromfile(cfg_file)
    cfg.default_hooks.pop('safe_checkpoint')
    cfg.experiment_name = f'plain_{time.time_ns()}'
    Runner.from_cfg(cfg).train()
    plain = str(tmp_path / 'plain' / 'iter_2.pth')

    with pytest.raises(UnsafeCheckpointError) as info:
        _train(tools_train, cfg_file, str(tmp_path / 'plain'), 4, resume=True)
    assert plain in str(info.value)
    assert 'tools/convert_checkpoint.py --trust-checkpoint' in str(info.value)

    converted = str(tmp_path / 'converted.pth')
    with pytest.raises(SystemExit, match='--trust-checkpoint'):
        tools_convert.main([plain, converted])
    assert not osp.exists(converted)
    tool = osp.join(REPO_ROOT, 'tools', 'convert_checkpoint.py')
    done = _run([sys.executable, tool, '--trust-checkpoint', plain, converted])
    assert done.returncode == 0, done.stderr
    torch.load(converted, weights_only=True)

    runner = _train(
        tools_train,
        cfg_file,
        str(tmp_path / 'resumed'),
        4,
        f'load_from={converted}',
        resume=True)
    assert runner.iter == 4
    loss = runner.message_hub.log_scalars['train/loss']
    assert len(loss.data[0]) == 4


def test_distributed_training_on_cpu(tmp_path, tiny_data, dist_train):
    work_dir = str(tmp_path / 'dist')
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny_dist.py'),
        tiny_data,
        work_dir,
        max_iters=3,
        custom_imports=dict(
            imports=['mmseg_fnm', 'rank_dump_hook'],
            allow_failed_imports=False),
        custom_hooks=[dict(type='DumpRankWeightsHook')])
    ranks = dist_train(cfg_file, work_dir)
    for dump in ranks:
        assert dump['world_size'] == 2
        assert dump['wrapper'] == 'MMDistributedDataParallel'
    for name, param in ranks[0]['params'].items():
        assert torch.equal(param, ranks[1]['params'][name]), name
    # The ranks saw different data (BN statistics are not synchronised),
    # so equal weights come from synchronised gradients.
    assert any(not torch.equal(b, ranks[1]['buffers'][n])
               for n, b in ranks[0]['buffers'].items()
               if n.endswith('running_mean'))
    checkpoint = torch.load(
        osp.join(work_dir, 'iter_3.pth'), weights_only=True)
    for name, param in ranks[0]['params'].items():
        assert torch.equal(checkpoint['state_dict'][name], param), name


def test_mmseg_tools_run_our_configs(tmp_path, tiny_data):
    """mmseg's own tools/train.py and tools/test.py, via custom_imports."""
    mim_tools = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
    work_dir = str(tmp_path / 'mmseg_tools')
    cfg_file = write_tiny_seg_config(
        str(tmp_path / 'tiny.py'), tiny_data, work_dir, max_iters=2)
    result = _run([sys.executable, osp.join(mim_tools, 'train.py'), cfg_file])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    saved = torch.load(checkpoint, weights_only=True)
    assert saved['meta']['iter'] == 2

    result = _run([
        sys.executable,
        osp.join(mim_tools, 'test.py'), cfg_file, checkpoint, '--work-dir',
        work_dir
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mIoU' in result.stdout + result.stderr

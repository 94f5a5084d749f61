import os
import os.path as osp
import subprocess
import sys
import time

import mmseg
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_fnm.utils import load_safe

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Processes started by these tests share the machine's few cores.
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


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


@pytest.mark.parametrize('pointer', ['intact', 'empty'])
def test_resume_equals_uninterrupted_training(tmp_path, demo_cfg, dump_cfg,
                                              tools_train, one_thread,
                                              pointer):
    cfg = demo_cfg('basic', max_iters=4, batch_size=2, validate=False)
    # Dropout and num_workers=0: RandomStateHook restores the generators
    # after mmengine's skip over the trained batches and before the next.
    cfg.model.decode_head.dropout_ratio = 0.1
    cfg.default_hooks.checkpoint.interval = 2
    cfg_file = dump_cfg(cfg)
    interrupted = str(tmp_path / 'interrupted')
    straight = str(tmp_path / 'straight')

    _train(tools_train, cfg_file, interrupted, 2)
    if pointer == 'empty':
        # killed while mmengine wrote last_checkpoint (in place)
        open(osp.join(interrupted, 'last_checkpoint'), 'w').close()
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


def test_plain_mmengine_checkpoint_resumes_and_converts(
        tmp_path, demo_cfg, dump_cfg, tools_train, tools_convert, one_thread):
    cfg_file = dump_cfg(
        demo_cfg(
            'basic',
            work_dir=str(tmp_path / 'plain'),
            max_iters=2,
            batch_size=2,
            validate=False))
    # What plain mmengine writes: the same config without the hook.
    cfg = Config.fromfile(cfg_file)
    cfg.default_hooks.pop('safe_checkpoint')
    cfg.experiment_name = f'plain_{time.time_ns()}'
    Runner.from_cfg(cfg).train()
    plain = str(tmp_path / 'plain' / 'iter_2.pth')

    # mmengine's own checkpoint resumes as it is, under weights_only
    runner = _train(
        tools_train, cfg_file, str(tmp_path / 'plain'), 4, resume=True)
    assert runner.iter == 4
    assert len(runner.message_hub.log_scalars['train/loss'].data[0]) == 4

    # and still converts, for tools that load with plain torch.load
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


@pytest.mark.multiprocess
def test_distributed_training_on_cpu(demo_cfg, dump_cfg, dist_train):
    cfg = demo_cfg('basic', max_iters=3, batch_size=2, validate=False)
    cfg.custom_imports.imports.append('rank_dump_hook')
    cfg.custom_hooks = [dict(type='DumpRankWeightsHook')]
    work_dir = cfg.work_dir
    ranks = dist_train(dump_cfg(cfg), work_dir)
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


@pytest.mark.parametrize('safe_hook', [True, False])
def test_mmseg_tools_run_our_configs(demo_cfg, dump_cfg, safe_hook):
    """mmseg's own tools/train.py and tools/test.py, via custom_imports;
    without SafeCheckpointHook as in a user's config that inherits an
    official mmseg config and imports the plugin."""
    mim_tools = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
    cfg = demo_cfg('basic', max_iters=2, batch_size=2, validate=False)
    if not safe_hook:
        cfg.default_hooks.pop('safe_checkpoint')
    cfg.log_level = 'INFO'  # mmseg's test.py logs the metrics at INFO
    work_dir = cfg.work_dir
    cfg_file = dump_cfg(cfg)
    result = _run([sys.executable, osp.join(mim_tools, 'train.py'), cfg_file])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    saved = load_safe(checkpoint)
    assert saved['meta']['iter'] == 2
    if safe_hook:
        torch.load(checkpoint, weights_only=True)

    result = _run([
        sys.executable,
        osp.join(mim_tools, 'test.py'), cfg_file, checkpoint, '--work-dir',
        work_dir
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mIoU' in result.stdout + result.stderr

"""A training killed with SIGKILL and continued with ``--resume`` ends
bit-identical to the uninterrupted one (tools/train.py in subprocesses)."""
import glob
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from mmseg_fnm.utils import load_safe

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Imported by the trainings through custom_imports. It kills the process
# with SIGKILL (no clean-up runs) at a chosen point, set by environment:
# KILL_AT_ITER=N before training iteration N+1, after the checkpoints of
# the iterations before it were written; KILL_ON_WRITE=iter_8.pth while
# that checkpoint is written (its data on disk, not yet in place).
KILL_SWITCH = '''
import os
import signal

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


_replace = os.replace


def _replace_or_die(src, dst, *args, **kwargs):
    target = os.environ.get('KILL_ON_WRITE')
    if target and str(dst).endswith(target):
        _die()
    return _replace(src, dst, *args, **kwargs)


os.replace = _replace_or_die


@HOOKS.register_module()
class KillAtIterHook(Hook):
    priority = 'LOWEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        at = os.environ.get('KILL_AT_ITER')
        if at and runner.iter == int(at):
            _die()
'''

MAX_ITERS = 12


@pytest.fixture
def kill_cfg(tmp_path, demo_cfg, dump_cfg):
    """The FNM demo config at test size, with dropout (the global torch
    generator) and a data loader worker, as the demo trains."""
    (tmp_path / 'kill_switch.py').write_text(KILL_SWITCH)
    cfg = demo_cfg('fnm', max_iters=MAX_ITERS, batch_size=2, validate=False)
    cfg.model.decode_head.dropout_ratio = 0.1  # the demo model's
    cfg.train_dataloader.num_workers = 1
    cfg.train_dataloader.persistent_workers = True
    cfg.default_hooks.checkpoint.interval = 4
    cfg.randomness = dict(seed=0)
    cfg.custom_imports.imports.append('kill_switch')
    cfg.custom_hooks = [dict(type='KillAtIterHook')]
    return dump_cfg(cfg)


def _train(cfg_file, work_dir, tmp_path, resume=False, cfg_options=(),
           **kill):
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join([str(tmp_path), REPO_ROOT]),
        **{key.upper(): str(value)
           for key, value in kill.items()})
    cmd = [
        sys.executable, 'tools/train.py', cfg_file, '--work-dir',
        str(work_dir)
    ]
    if resume:
        cmd.append('--resume')
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    return subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def _assert_bit_identical(a, b):
    assert a['meta']['iter'] == b['meta']['iter'] == MAX_ITERS
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    torch.testing.assert_close(a['optimizer'], b['optimizer'], rtol=0, atol=0)
    losses = [c['message_hub']['log_scalars']['train/loss'].data[0]
              for c in (a, b)]
    assert len(losses[0]) == MAX_ITERS
    assert (losses[0] == losses[1]).all()


def _resume_and_compare(cfg_file, work_dir, tmp_path, resumed_from,
                        expected):
    """``--resume`` in ``work_dir``; it must go on from ``resumed_from``
    and end bit-identical to ``expected``."""
    written = os.stat(work_dir / resumed_from).st_mtime_ns
    result = _train(cfg_file, work_dir, tmp_path, resume=True)
    assert result.returncode == 0, result.stderr[-3000:]
    # It resumed (from scratch it would have written the file again).
    assert os.stat(work_dir / resumed_from).st_mtime_ns == written
    _assert_bit_identical(
        expected, load_safe(str(work_dir / f'iter_{MAX_ITERS}.pth')))


@pytest.mark.multiprocess
def test_killed_training_resumes_bit_identical(tmp_path, kill_cfg):
    straight = tmp_path / 'straight'
    result = _train(kill_cfg, straight, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = load_safe(str(straight / f'iter_{MAX_ITERS}.pth'))

    # Killed after iteration 10, with iter_8.pth written: resume replays
    # iterations 9 and 10 (dropout included) as the first run drew them.
    after = tmp_path / 'killed_after_checkpoint'
    result = _train(kill_cfg, after, tmp_path, kill_at_iter=10)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert _last_checkpoint(after) == 'iter_8.pth'
    assert not osp.exists(after / f'iter_{MAX_ITERS}.pth')
    _resume_and_compare(kill_cfg, after, tmp_path, 'iter_8.pth', expected)

    # Killed while iter_8.pth was being written: no partial iter_8.pth is
    # left, last_checkpoint still names iter_4.pth, and resuming from it
    # ends bit-identical too.
    during = tmp_path / 'killed_while_writing'
    result = _train(kill_cfg, during, tmp_path, kill_on_write='iter_8.pth')
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert not osp.exists(during / 'iter_8.pth')
    assert glob.glob(str(during / '.tmp-iter_8.pth.*')), os.listdir(during)
    assert _last_checkpoint(during) == 'iter_4.pth'
    _resume_and_compare(kill_cfg, during, tmp_path, 'iter_4.pth', expected)

    # The control: the same resume with RandomStateHook switched off ends
    # elsewhere (dropout draws other masks), so the checks above can fail.
    control = tmp_path / 'control'
    shutil.copytree(straight, control)
    os.remove(control / f'iter_{MAX_ITERS}.pth')
    with open(control / 'last_checkpoint', 'w') as f:
        f.write(str(control / 'iter_8.pth'))
    result = _train(
        kill_cfg,
        control,
        tmp_path,
        resume=True,
        cfg_options=['default_hooks.random_state=None'])
    assert result.returncode == 0, result.stderr[-3000:]
    a = expected['state_dict']
    b = load_safe(str(control / f'iter_{MAX_ITERS}.pth'))['state_dict']
    assert any(not torch.equal(a[key], b[key]) for key in a)


@pytest.mark.multiprocess
def test_distributed_resume_restores_each_rank(tmp_path, demo_cfg, dump_cfg,
                                               dist_train):
    """Two gloo processes: each rank gets its own random states back (a
    rank that drew another rank's dropout masks would change the
    synchronised gradients)."""
    cfg = demo_cfg('basic', max_iters=6, batch_size=2, validate=False)
    cfg.model.decode_head.dropout_ratio = 0.1
    cfg.default_hooks.checkpoint.interval = 2
    # Each rank seeded differently, so the ranks' states differ.
    cfg.randomness = dict(seed=0, diff_rank_seed=True)
    cfg.custom_imports.imports.append('rank_dump_hook')
    cfg.custom_hooks = [dict(type='DumpRankWeightsHook')]
    cfg_file = dump_cfg(cfg)
    straight = cfg.work_dir
    expected = dist_train(cfg_file, straight)

    checkpoint = load_safe(osp.join(straight, 'iter_4.pth'))
    states = checkpoint['random_states']
    assert len(states) == 2
    assert not torch.equal(states[0]['torch'], states[1]['torch'])

    resumed = str(tmp_path / 'resumed')
    shutil.copytree(straight, resumed)
    for name in ('iter_6.pth', 'rank0.pth', 'rank1.pth'):
        os.remove(osp.join(resumed, name))
    with open(osp.join(resumed, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(resumed, 'iter_4.pth'))
    ranks = dist_train(cfg_file, resumed, 2, '--resume', '--work-dir',
                       resumed)
    for rank, dump in enumerate(ranks):
        for name, param in dump['params'].items():
            assert torch.equal(param, expected[rank]['params'][name]), name

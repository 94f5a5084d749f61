"""A 2-process (gloo) robustness sweep gives the single-process numbers."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SWEEP = [
    '--attacks', 'FGSM', 'BIM:steps=3,alpha=0.01', '--epsilons', '0', '0.01',
    '0.03'
]


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _records(work_dir):
    """The records without wall time, which differs from run to run."""
    [path] = glob.glob(osp.join(work_dir, '*', 'robustness.json'))
    with open(path) as f:
        records = json.load(f)['records']
    for record in records:
        assert record.pop('seconds') >= 0
    return records


@pytest.mark.multiprocess
def test_two_ranks_give_the_single_process_numbers(untrained_demo, tmp_path):
    # Untrained weights: every setting of the sweep has numbers of its own.
    cfg_file, checkpoint = untrained_demo
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHON=sys.executable,
        PORT=str(_free_port()))
    single, dist = str(tmp_path / 'single'), str(tmp_path / 'dist')
    commands = [
        [sys.executable, 'tools/test.py', cfg_file, checkpoint],
        ['bash', 'tools/dist_test.sh', cfg_file, checkpoint, '2'],
    ]
    for command, work_dir in zip(commands, (single, dist)):
        result = subprocess.run(
            command + [
                '--work-dir', work_dir, *SWEEP, '--cfg-options',
                'log_level=INFO'
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120)  # a rank left waiting would hang here
        assert result.returncode == 0, result.stderr[-3000:]
    [log] = glob.glob(osp.join(dist, '*', '*.log'))
    with open(log) as f:
        log = f.read()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log

    records = _records(single)
    assert _records(dist) == records
    assert len(records) == 10
    # the comparison covers attacked settings with numbers of their own
    clean = records[0]['mIoU']
    assert any(r['mIoU'] != clean for r in records if r['eps'] > 0)

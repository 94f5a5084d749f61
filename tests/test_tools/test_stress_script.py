"""tools/stress_multiprocess_tests.sh: counting, and resuming after a kill.

The pytest it runs is replaced by a stand-in interpreter (via
``MMSEG_FNM_VENV``) that prints what ``pytest -rA`` prints, so the script's
own logic is tested in a second, not the multi-process tests themselves.
"""
import os
import os.path as osp
import subprocess

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO_ROOT, 'tools', 'stress_multiprocess_tests.sh')


def _fake_venv(tmp_path, outcome):
    """A venv whose python prints one test result and counts its calls."""
    calls = tmp_path / 'calls'
    python = tmp_path / 'venv' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    python.write_text('#!/usr/bin/env bash\n'
                      f'echo call >> {calls}\n'
                      f'echo "{outcome} tests/test_x.py::test_a"\n')
    python.chmod(0o755)
    return str(tmp_path / 'venv'), calls


def _stress(tmp_path, venv, runs):
    env = dict(
        os.environ,
        MMSEG_FNM_VENV=venv,
        STRESS_LOG_DIR=str(tmp_path / 'logs'))
    return subprocess.run(['bash', SCRIPT, str(runs)],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=60)


def test_counts_and_resumes(tmp_path):
    venv, calls = _fake_venv(tmp_path, 'PASSED')
    result = _stress(tmp_path, venv, 3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '3 passed, 0 failed' in result.stdout
    assert len(calls.read_text().split()) == 3

    logs = tmp_path / 'logs'
    # run 2 killed: its log never moved into place
    (logs / 'run_2.log').rename(logs / 'run_2.log.part')
    result = _stress(tmp_path, venv, 4)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'run 1/4: kept' in result.stdout
    assert 'run 3/4: kept' in result.stdout
    assert len(calls.read_text().split()) == 3 + 2  # runs 2 and 4
    assert '4 passed, 0 failed' in result.stdout
    assert not list(logs.glob('*.part'))


def test_failures_and_empty_runs_fail_the_script(tmp_path):
    venv, _ = _fake_venv(tmp_path, 'FAILED')
    result = _stress(tmp_path, venv, 2)
    assert result.returncode != 0
    assert '0 passed, 2 failed' in result.stdout

    venv, _ = _fake_venv(tmp_path / 'quiet', 'collected 0 items;')
    result = _stress(tmp_path / 'quiet', venv, 1)
    assert result.returncode != 0
    assert '0 passed, 1 failed' in result.stdout

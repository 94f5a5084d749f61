import os
import stat

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner.checkpoint import save_checkpoint

from mmseg_fnm.utils import AtomicLocalBackend, atomic_write, fileio


def test_local_paths_use_the_atomic_backend(tmp_path):
    assert isinstance(get_file_backend(str(tmp_path)), AtomicLocalBackend)


def test_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / 'sub' / 'file.txt'
    atomic_write('first', target)
    atomic_write(b'second', target)
    assert target.read_text() == 'second'
    assert os.listdir(tmp_path / 'sub') == ['file.txt']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_8.pth'
    atomic_write(b'old checkpoint', target)

    def fail(fd):
        raise OSError('disk full')

    monkeypatch.setattr(fileio.os, 'fsync', fail)
    with pytest.raises(OSError, match='disk full'):
        atomic_write(b'new checkpoint', target)
    assert target.read_bytes() == b'old checkpoint'
    assert os.listdir(tmp_path) == ['iter_8.pth']


def test_mmengine_checkpoints_are_renamed_into_place(tmp_path, monkeypatch):
    replaced = []
    replace = os.replace

    def record(src, dst):
        replaced.append((os.path.basename(src), str(dst)))
        return replace(src, dst)

    monkeypatch.setattr(fileio.os, 'replace', record)
    target = str(tmp_path / 'iter_4.pth')
    save_checkpoint({'state_dict': {'w': torch.ones(2)}}, target)
    assert len(replaced) == 1
    assert replaced[0][0].startswith('.tmp-iter_4.pth.')
    assert replaced[0][1] == target
    loaded = torch.load(target, weights_only=True)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))

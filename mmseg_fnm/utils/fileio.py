"""Local files that are either whole or absent.

mmengine's ``LocalBackend`` writes in place (``open(path, 'wb')``), so a job
killed while writing a checkpoint leaves a truncated ``iter_N.pth`` behind.
:class:`AtomicLocalBackend` writes to a temporary file in the same folder,
flushes it to disk and renames it over the target (``os.replace`` is atomic
on POSIX and Windows), so a reader sees the old file or the new one, never
a part.  Importing this module registers it for local paths, which covers
mmengine's ``save_checkpoint`` and every other ``put``/``put_text`` of local
files while the plugin is imported.
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

import mmengine
from mmengine.fileio import LocalBackend, register_backend

# Temporary files start with this, so that they are easy to recognise (and
# to delete) when a job was killed while writing.
TMP_PREFIX = '.tmp-'


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once: os.umask can only be read by setting it, which is not thread
# safe during training.
_UMASK = _current_umask()


def atomic_write(data: Union[bytes, str],
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that it is whole or not there.

    Args:
        data (bytes | str): What to write; ``str`` is encoded.
        filepath (str | Path): Target; its folder is created if missing.
        encoding (str): Encoding of ``str`` data. Defaults to 'utf-8'.
    """
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    mmengine.mkdir_or_exist(folder)
    if isinstance(data, str):
        data = data.encode(encoding)
    fd, tmp_path = tempfile.mkstemp(
        prefix=f'{TMP_PREFIX}{osp.basename(filepath)}.', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            # Without this a crash of the machine (not just of the job)
            # could leave the renamed file empty on some file systems.
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions open() would.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, filepath)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with atomic ``put`` and ``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically (see
        :func:`atomic_write`)."""
        atomic_write(obj, filepath)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (see
        :func:`atomic_write`)."""
        atomic_write(obj, filepath, encoding)


register_backend('local', AtomicLocalBackend, force=True, prefixes='')

"""Checkpoints that load under ``torch.load(weights_only=True)``.

A checkpoint written by mmengine's Runner holds, besides tensors and plain
Python values, objects that the restricted unpickler of
``torch.load(weights_only=True)`` (the default since torch 2.6) refuses:

* ``message_hub.log_scalars``: :class:`~mmengine.logging.HistoryBuffer`
  objects with numpy arrays inside, whose pickle also names
  ``builtins.getattr`` (for the bound statistics methods it carries);
* numpy scalars (e.g. ``np.float64`` best scores in
  ``message_hub.runtime_info``) and numpy arrays anywhere else.

Instead of widening the unpickler (allowlisting ``getattr`` reopens
arbitrary code execution), :func:`to_weights_only_safe` rewrites these
values into tensors, Python scalars and tagged dicts before the checkpoint
is written, and :func:`from_weights_only_safe` restores them after loading.
Importing this module replaces mmengine's loader for local files with
:func:`load_from_local_safe`, which always loads with ``weights_only=True``
and restores the tagged values, so ``load_from`` and ``resume`` keep their
usual behaviour.

A checkpoint written by plain mmengine (mmseg's own ``tools/train.py``)
loads too, still under ``weights_only=True``: a second attempt allows
exactly the harmless content mmengine writes (:func:`mmengine_globals`):
``HistoryBuffer``, numpy arrays and scalars of plain dtypes, and
``builtins.getattr`` replaced by a function that only serves
``HistoryBuffer``'s statistics methods.  Any other global is refused with
:class:`UnsafeCheckpointError`, which names the file and the conversion
command (``tools/convert_checkpoint.py --trust-checkpoint IN OUT``).
"""
import logging
import os
import os.path as osp
import pickle
import re
from collections import Counter, OrderedDict
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

# Key of the dicts that stand in for objects the restricted unpickler
# refuses; its value names the original type.
TAG = '__mmseg_fnm__'
SAFE_HOOK_TYPE = 'SafeCheckpointHook'

# Leaves that ``torch.load(weights_only=True)`` reads back (see
# ``torch._weights_only_unpickler._get_allowed_globals``).
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray,
                 torch.Size, torch.dtype, torch.device)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or damaged."""


def _path(parent: str, key: Any) -> str:
    return f'{parent}[{key!r}]'


def _ndarray_to_safe(array: np.ndarray, where: str) -> dict:
    if array.dtype.kind not in 'biufcUS':
        raise TypeError(
            f'{where} is a numpy array of dtype {array.dtype}, which cannot '
            'be stored safely in a checkpoint; store numbers, strings or '
            'tensors instead.')
    try:
        data = torch.tensor(array)
    except (TypeError, RuntimeError):
        # Strings and dtypes without a torch counterpart go as lists.
        data = array.tolist()
    return {
        TAG: 'ndarray',
        'data': data,
        'dtype': array.dtype.str,
        'shape': list(array.shape)
    }


def _ndarray_from_safe(obj: dict) -> np.ndarray:
    data = obj['data']
    if isinstance(data, torch.Tensor):
        array = data.cpu().numpy()
    else:
        array = np.array(data, dtype=np.dtype(obj['dtype']))
    return array.astype(
        np.dtype(obj['dtype']), copy=False).reshape(obj['shape'])


def _history_buffer_to_safe(buffer: HistoryBuffer, where: str) -> dict:
    log_history, count_history = buffer.data
    return {
        TAG: 'HistoryBuffer',
        'log_history': _ndarray_to_safe(log_history, where),
        'count_history': _ndarray_to_safe(count_history, where),
        'max_length': int(buffer.max_length),
    }


def _history_buffer_from_safe(obj: dict) -> HistoryBuffer:
    # Custom statistics methods are class-level registrations made at
    # import time, so they need no restoring.
    return HistoryBuffer(
        log_history=_ndarray_from_safe(obj['log_history']),
        count_history=_ndarray_from_safe(obj['count_history']),
        max_length=obj['max_length'])


def to_weights_only_safe(obj: Any, where: str = 'checkpoint') -> Any:
    """Rewrite ``obj`` so that ``torch.load(weights_only=True)`` reads it.

    Containers are rebuilt, leaves (tensors included) are shared, never
    copied, so this is cheap for large state dicts.

    * ``HistoryBuffer`` and numpy arrays become tagged dicts that
      :func:`from_weights_only_safe` turns back into the original objects;
    * numpy scalars become Python scalars;
    * dict, list and tuple subclasses (``ConfigDict``, named tuples, ...)
      become their plain base type; tensor subclasses become tensors.

    Args:
        obj: A checkpoint or any value inside one.
        where (str): Where ``obj`` sits, for error messages.

    Returns:
        The rewritten value.

    Raises:
        TypeError: If ``obj`` holds a value of another type, naming its
            place in the checkpoint.
    """
    if isinstance(obj, torch.Tensor):
        if type(obj) in (torch.Tensor, torch.nn.Parameter):
            return obj
        return obj.as_subclass(torch.Tensor)
    if type(obj) in _PLAIN_LEAVES:
        return obj
    if isinstance(obj, np.generic):
        return to_weights_only_safe(obj.item(), where)
    if isinstance(obj, np.ndarray):
        return _ndarray_to_safe(obj, where)
    if isinstance(obj, HistoryBuffer):
        return _history_buffer_to_safe(obj, where)
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (OrderedDict, Counter) else {}
        for key, value in obj.items():
            out[to_weights_only_safe(key, f'{where} key {key!r}')] = \
                to_weights_only_safe(value, _path(where, key))
        return out
    if isinstance(obj, (list, tuple, set)):
        base = next(t for t in (list, tuple, set) if isinstance(obj, t))
        return base(
            to_weights_only_safe(value, _path(where, i))
            for i, value in enumerate(obj))
    raise TypeError(
        f'{where} is a {type(obj).__module__}.{type(obj).__qualname__}, '
        'which torch.load(weights_only=True) cannot read back. Store '
        'tensors, numbers, strings or containers of them instead (e.g. '
        "convert it in your hook's before_save_checkpoint).")


def from_weights_only_safe(obj: Any) -> Any:
    """Undo :func:`to_weights_only_safe` on a loaded checkpoint.

    Values that were not tagged are returned as they are, so calling it
    twice, or on a checkpoint that never needed tagging, is harmless.
    """
    if type(obj) in (dict, OrderedDict, Counter):
        tag = obj.get(TAG)
        if tag == 'HistoryBuffer':
            return _history_buffer_from_safe(obj)
        if tag == 'ndarray':
            return _ndarray_from_safe(obj)
        out = type(obj)()
        for key, value in obj.items():
            out[key] = from_weights_only_safe(value)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(from_weights_only_safe(v) for v in obj)
    return obj


def make_checkpoint_safe(checkpoint: dict) -> dict:
    """Apply :func:`to_weights_only_safe` to ``checkpoint`` in place.

    In place because mmengine's Runner writes the very dict it passed to
    ``before_save_checkpoint``.
    """
    for key in list(checkpoint):
        checkpoint[key] = to_weights_only_safe(checkpoint[key],
                                               _path('checkpoint', key))
    return checkpoint


def restore_checkpoint(checkpoint: dict) -> dict:
    """Apply :func:`from_weights_only_safe` to ``checkpoint`` in place."""
    for key in list(checkpoint):
        checkpoint[key] = from_weights_only_safe(checkpoint[key])
    return checkpoint


_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's pickles use it, and nothing else.

    Pickle protocol 2 names a class's function ``HistoryBuffer.min`` as
    ``getattr(HistoryBuffer, 'min')``; this serves exactly those lookups.
    The unpickler never calls what it returns (only allowed globals are
    called), and any other object or name is refused.
    """
    owner = obj if isinstance(obj, type) else type(obj)
    # The built-in methods are registered by the first HistoryBuffer made.
    methods = set(_HISTORY_BUFFER_METHODS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and isinstance(name, str) and name in methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({owner.__qualname__}, {name!r}) is not allowed: only '
        "HistoryBuffer's statistics methods are")


def _plain_dtype(*args, **kwargs) -> np.dtype:
    """``numpy.dtype`` restricted to numbers, booleans and strings (an
    object dtype would unpickle arbitrary objects into an array)."""
    dtype = np.dtype(*args, **kwargs)
    if dtype.kind not in 'biufcUS':
        raise pickle.UnpicklingError(
            f'numpy dtype {dtype} is not allowed in a checkpoint')
    return dtype


def mmengine_globals() -> list:
    """What a checkpoint of plain mmengine needs besides torch's defaults.

    For ``torch.serialization.safe_globals``: ``HistoryBuffer``, numpy
    arrays and scalars of plain dtypes (under numpy 1 and 2 names), and the
    restricted stand-ins for ``builtins.getattr`` and ``numpy.dtype``.
    """
    multiarray = np.core.multiarray if hasattr(np, 'core') else None
    numpy_core = getattr(np, '_core', None)
    module = getattr(numpy_core, 'multiarray', None) or multiarray
    allowed = [
        HistoryBuffer,
        np.ndarray,
        (_history_buffer_getattr, 'builtins.getattr'),
        (_plain_dtype, 'numpy.dtype'),
    ]
    for prefix in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        allowed += [(module._reconstruct, f'{prefix}._reconstruct'),
                    (module.scalar, f'{prefix}.scalar')]
    for code in '?bBhHiIlLqQefdgFDGUS':
        dtype_class = type(np.dtype(code))
        allowed.append(
            (dtype_class,
             f'{dtype_class.__module__}.{dtype_class.__qualname__}'))
    return allowed


def safe_checkpoint_name(filename: str) -> str:
    """Suggested name of the converted copy of ``filename``."""
    root, ext = osp.splitext(filename)
    return f'{root}_safe{ext or ".pth"}'


def _unsafe_error(filename: str, error: Exception) -> UnsafeCheckpointError:
    # Keep torch's reason, drop its advice (unrestricted loading, or an
    # allowlist that would only move the failure to the next global).
    text = str(error)
    reason = text.split('WeightsUnpickler error:', 1)[-1]
    reason = reason.split('Check the documentation', 1)[0]
    reason = ' '.join(reason.split()).split(' Please ')[0] or text.strip()
    return UnsafeCheckpointError(
        f'Checkpoint {filename} cannot be loaded with '
        f'torch.load(weights_only=True): {reason}\n'
        'It holds objects beyond tensors, plain values and what mmengine '
        'writes, and unpickling it without restrictions can execute '
        'arbitrary code. If you trust the file, convert it once and use '
        'the copy:\n'
        '    python tools/convert_checkpoint.py --trust-checkpoint '
        f'{filename} {safe_checkpoint_name(filename)}')


def load_safe(filename: str,
              map_location: Union[str, Callable, torch.device,
                                  None] = None) -> Any:
    """``torch.load(filename, weights_only=True)`` plus restoring.

    Args:
        filename (str): Path of a local checkpoint.
        map_location: Same as :func:`torch.load`.

    Returns:
        The checkpoint, with the values that :func:`to_weights_only_safe`
        rewrote turned back into their original objects.

    Raises:
        UnsafeCheckpointError: If the file holds anything but tensors,
            plain values and what plain mmengine writes.
        CorruptCheckpointError: If the file is truncated or damaged.
    """
    try:
        checkpoint = torch.load(
            filename, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and \
                'PytorchStreamReader' not in str(error):
            raise
        # A job killed while writing leaves a truncated file behind.
        raise CorruptCheckpointError(
            f'Checkpoint {filename} is truncated or damaged '
            f'({type(error).__name__}: {str(error).split(". ")[0] or "empty"})'
            '; it was probably being written when the job stopped. Delete '
            'it to resume from the one before (tools/train.py --resume then '
            'takes the newest checkpoint left), or pass another file.'
        ) from None
    except pickle.UnpicklingError:
        # Written by plain mmengine? Allow exactly what it writes.
        try:
            with torch.serialization.safe_globals(mmengine_globals()):
                checkpoint = torch.load(
                    filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            raise _unsafe_error(filename, error) from None
    if isinstance(checkpoint, dict):
        restore_checkpoint(checkpoint)
    return checkpoint


# What mmengine's CheckpointHook names its checkpoints (``filename_tmpl``).
_NUMBERED_CHECKPOINT = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def checkpoint_to_resume(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should load where mmengine would fail.

    mmengine's ``CheckpointHook`` writes ``work_dir/last_checkpoint`` in
    place, after the checkpoint itself; a job killed during that tiny write
    leaves it empty or cut short, and mmengine's resume then fails on a
    path that is not there. Checkpoints themselves are written atomically
    (:class:`~mmseg_fnm.utils.fileio.AtomicLocalBackend`), so every
    ``iter_N.pth`` / ``epoch_N.pth`` present is complete, and the newest
    of them is the one ``last_checkpoint`` was about to name.

    Args:
        work_dir (str): The training's work directory.

    Returns:
        str, optional: None where mmengine resumes as it should: no
        ``last_checkpoint`` (nothing saved yet: training starts afresh), one
        naming a file that exists, or one naming a remote path. Otherwise
        the newest numbered checkpoint in ``work_dir``, with a warning.

    Raises:
        FileNotFoundError: If ``last_checkpoint`` is broken and no
            numbered checkpoint is left in ``work_dir``.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        named = f.read().strip()
    if '://' in named or (named and osp.isfile(named)):
        return None
    numbered = []
    for name in os.listdir(work_dir):
        match = _NUMBERED_CHECKPOINT.match(name)
        if match and osp.isfile(osp.join(work_dir, name)):
            numbered.append((int(match.group(1)), name))
    problem = f'names {named}, which does not exist' if named else \
        'is empty (the job was probably killed while writing it)'
    if not numbered:
        raise FileNotFoundError(
            f'{pointer} {problem}, and {work_dir} holds no iter_N.pth or '
            'epoch_N.pth to resume from. Delete last_checkpoint to train '
            'from the start, or write the path of a checkpoint into it.')
    newest = osp.join(work_dir, max(numbered)[1])
    print_log(
        f'{pointer} {problem}; resuming from the newest checkpoint in the '
        f'work_dir instead: {newest}',
        logger='current',
        level=logging.WARNING)
    return newest


def load_from_local_safe(filename: str, map_location: Union[str, Callable,
                                                            None]) -> Any:
    """mmengine ``CheckpointLoader`` backend for local files.

    Replaces mmengine's ``load_from_local``, which calls :func:`torch.load`
    without ``weights_only`` (unsafe with torch < 2.6, and an unhelpful
    error for old checkpoints with torch >= 2.6).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_safe(filename, map_location)


CheckpointLoader.register_scheme(
    prefixes='', loader=load_from_local_safe, force=True)


def convert_checkpoint(src: str,
                       dst: str,
                       trust_checkpoint: bool = False) -> dict:
    """Write a copy of ``src`` that loads with ``weights_only=True``.

    Args:
        src (str): The checkpoint to convert.
        dst (str): Where to write the converted copy.
        trust_checkpoint (bool): Load ``src`` with an unrestricted unpickler,
            which can execute arbitrary code hidden in the file. Only for
            files from a trusted source. Defaults to False.

    Returns:
        dict: The converted checkpoint (as loaded back from ``dst``).
    """
    if not osp.isfile(src):
        raise FileNotFoundError(f'{src} can not be found.')
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError(f'The output {dst} must differ from the input, so '
                         'that a failed conversion cannot destroy it.')
    if not trust_checkpoint:
        raise PermissionError(
            f'Converting {src} unpickles it without restrictions, which can '
            'execute arbitrary code hidden in the file. Pass '
            '--trust-checkpoint (trust_checkpoint=True) only for files from '
            'a trusted source.')
    checkpoint = torch.load(src, map_location='cpu', weights_only=False)
    if isinstance(checkpoint, dict):
        checkpoint = make_checkpoint_safe(checkpoint)
    else:
        checkpoint = to_weights_only_safe(checkpoint)
    torch.save(checkpoint, dst)
    return load_safe(dst, map_location='cpu')


def _is_hook(hook: Any, hook_type_name: str) -> bool:
    hook_type = hook.get('type') if isinstance(hook, dict) else type(hook)
    if isinstance(hook_type, str):
        # Accept scoped names such as 'mmseg.SafeCheckpointHook'.
        return hook_type.split('.')[-1] == hook_type_name
    return getattr(hook_type, '__name__', None) == hook_type_name


def has_hook(cfg: Union[Config, dict], hook_type: str) -> bool:
    """Whether ``cfg`` registers a hook of type ``hook_type`` (a name)."""
    hooks = list((cfg.get('default_hooks') or {}).values())
    hooks += list(cfg.get('custom_hooks') or [])
    return any(_is_hook(hook, hook_type) for hook in hooks if hook is not None)


def ensure_hook(cfg: Union[Config, dict], hook_type: str, key: str) -> bool:
    """Add a hook of type ``hook_type`` to ``cfg.default_hooks[key]`` if
    ``cfg`` has none.

    ``default_hooks[key] = None`` (e.g. ``--cfg-options
    default_hooks.random_state=None``) switches the hook off: the entry is
    removed (mmengine accepts ``None`` only for its own default hooks) and
    nothing is added.

    Returns:
        bool: Whether the hook was added.
    """
    default_hooks = cfg.get('default_hooks') or ConfigDict()
    if key in default_hooks and default_hooks[key] is None:
        default_hooks.pop(key)
        return False
    if has_hook(cfg, hook_type):
        return False
    default_hooks[key] = ConfigDict(type=hook_type)
    cfg['default_hooks'] = default_hooks
    return True


def has_safe_checkpoint_hook(cfg: Union[Config, dict]) -> bool:
    """Whether ``cfg`` registers a ``SafeCheckpointHook``."""
    return has_hook(cfg, SAFE_HOOK_TYPE)


def ensure_safe_checkpoint_hook(cfg: Union[Config, dict],
                                key: str = 'safe_checkpoint') -> bool:
    """Add ``SafeCheckpointHook`` to ``cfg.default_hooks`` if it is missing.

    Configs that inherit ``configs/_base_/default_runtime.py`` have it
    already; this covers configs that do not.

    Returns:
        bool: Whether the hook was added.
    """
    return ensure_hook(cfg, SAFE_HOOK_TYPE, key)

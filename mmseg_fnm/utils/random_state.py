"""The global random generators' states, as plain values for checkpoints.

Dropout, random starts of attacks and augmentations in the main process
draw from the global generators of Python, numpy, torch and CUDA. A
checkpoint that does not store them resumes with freshly seeded
generators, so a killed and resumed training diverges from the
uninterrupted one. The states are kept as tensors and Python values, which
``torch.load(weights_only=True)`` reads back.
"""
import random
from typing import Any, Dict

import numpy as np
import torch


def get_random_state() -> Dict[str, Any]:
    """The states of this process's global random generators.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (the legacy
        global ``RandomState``), ``torch`` (CPU) and ``cuda`` (the current
        device's state in a list; empty when CUDA is not in use).
    """
    bit_generator, key, pos, has_gauss, cached_gaussian = \
        np.random.get_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only the device this process trains on: get_rng_state_all() would
        # create a CUDA context on every visible GPU from every rank.
        cuda = [torch.cuda.get_rng_state()]
    return dict(
        python=random.getstate(),
        numpy=dict(
            bit_generator=bit_generator,
            key=torch.from_numpy(key.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        cuda=list(cuda))


def set_random_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_random_state` returned.

    Args:
        state (dict): The states, e.g. read back from a checkpoint.

    Raises:
        ValueError: If ``state`` holds a CUDA state and CUDA is not
            available (CPU generators are restored before).
    """
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state['numpy']
    np.random.set_state(
        (numpy_state['bit_generator'],
         numpy_state['key'].cpu().numpy().astype(np.uint32),
         numpy_state['pos'], numpy_state['has_gauss'],
         numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda') or []
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(
                'The saved random state holds a CUDA generator state, but '
                'CUDA is not available here; resume on a GPU machine.')
        torch.cuda.set_rng_state(cuda[0].cpu())

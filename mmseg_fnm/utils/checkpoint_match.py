"""Refuse a checkpoint that does not fit the model built from a config.

mmengine's ``Runner.load_checkpoint`` (and mmseg's ``init_model``) load with
``strict=False``: missing, unexpected and differently shaped weights are
only logged, and the test then runs on a partly random network.
:func:`check_state_dict` compares the checkpoint's state dict with the
model's keys and shapes the same way mmengine loads it (``module.`` prefix
stripped, model wrappers and test-time-augmentation models unwrapped) and
raises :class:`CheckpointMismatchError` naming a few offending keys, the
checkpoint and the config.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

#: mmengine's default ``revise_keys`` of ``load_checkpoint``.
REVISE_KEYS = ((r'^module\.', ''), )


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model."""


def _unwrap(model: nn.Module) -> nn.Module:
    # The modules mmengine's load_state_dict loads into.
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def state_dict_of(
    checkpoint: dict,
    revise_keys: Sequence[Tuple[str, str]] = REVISE_KEYS
) -> Dict[str, torch.Tensor]:
    """The state dict of a loaded checkpoint, keys revised as mmengine does.

    Args:
        checkpoint (dict): A loaded checkpoint (``state_dict`` inside, or
            the state dict itself).
        revise_keys (Sequence[tuple[str, str]]): ``(pattern, replacement)``
            pairs applied to every key. Defaults to stripping ``module.``.

    Returns:
        dict[str, Tensor]: The tensors of the state dict.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            'A checkpoint must be a dict (a state dict or a dict with '
            f'"state_dict"), but got {type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def state_dict_mismatch(model: nn.Module,
                        checkpoint: dict) -> Dict[str, List[str]]:
    """Where a checkpoint and a model disagree.

    Args:
        model (nn.Module): The model (wrappers are unwrapped).
        checkpoint (dict): A loaded checkpoint or state dict.

    Returns:
        dict[str, list[str]]: ``missing`` (model keys the checkpoint lacks),
        ``unexpected`` (checkpoint keys the model lacks) and ``shape``
        (``'key: checkpoint (a, b) vs model (c, d)'``).  BN's
        ``num_batches_tracked`` may be missing: torch fills it in.
    """
    loaded = state_dict_of(checkpoint)
    expected = _unwrap(model).state_dict()
    missing = [
        k for k in expected
        if k not in loaded and not k.endswith('num_batches_tracked')
    ]
    unexpected = [k for k in loaded if k not in expected]
    shape = [
        f'{k}: checkpoint {tuple(v.shape)} vs model '
        f'{tuple(expected[k].shape)}' for k, v in loaded.items()
        if k in expected and v.shape != expected[k].shape
    ]
    return dict(missing=missing, unexpected=unexpected, shape=shape)


def check_state_dict(model: nn.Module,
                     checkpoint: dict,
                     filename: Optional[str] = None,
                     config: Optional[str] = None,
                     max_keys: int = 3) -> None:
    """Raise if ``checkpoint`` does not fit ``model`` exactly.

    Args:
        model (nn.Module): The model built from ``config``.
        checkpoint (dict): The loaded checkpoint.
        filename (str, optional): The checkpoint's path, for the message.
        config (str, optional): The config's path, for the message.
        max_keys (int): Keys named per kind of mismatch. Defaults to 3.

    Raises:
        CheckpointMismatchError: On any missing, unexpected or differently
            shaped weight.
    """
    mismatch = state_dict_mismatch(model, checkpoint)
    kinds = (('missing', 'weights of the model missing from the checkpoint'),
             ('unexpected', 'weights in the checkpoint that the model lacks'),
             ('shape', 'weights with another shape'))
    parts = []
    for kind, what in kinds:
        keys = mismatch[kind]
        if keys:
            more = f', ... ({len(keys) - max_keys} more)' \
                if len(keys) > max_keys else ''
            parts.append(f'{len(keys)} {what}: ' + '; '.join(keys[:max_keys]) +
                         more)
    if not parts:
        return
    name = 'The checkpoint' if filename is None else \
        f'The checkpoint {filename}'
    built = 'the model' if config is None else \
        f'the model of the config {config}'
    raise CheckpointMismatchError(
        f'{name} does not match {built}:\n  ' + '\n  '.join(parts) +
        '\nUse the config the checkpoint was trained with (same backbone, '
        'widths and number of classes).')


__all__ = [
    'CheckpointMismatchError', 'check_state_dict', 'state_dict_mismatch',
    'state_dict_of'
]

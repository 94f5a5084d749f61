"""Pixel losses of the strong segmentation attacks (APGD, SegPGD, SEA).

Every loss is maximised by the attack and follows the conventions of
:mod:`mmseg_fnm.attacks.base`: float32 with autocast off, per-sample SUM
over labelled pixels (ignored pixels count nowhere).  A loss is called as
``loss(logits, labels, ignore_index, step, steps)``: ``step`` (1-based) and
``steps`` let a loss change with the iteration, as SegPGD's balance does;
the others ignore them.  "Correct" pixels are those whose argmax is the
label at the current point; the masks are constants (no gradient flows
through the argmax).

The losses (Croce et al., "Towards Reliable Evaluation and Fast Training
of Robust Semantic Segmentation Models", ECCV 2024, section 3, and others):

- ``'ce'``: cross-entropy.
- ``'masked-ce'``: cross-entropy of the pixels still correct only, so the
  attack stops pushing pixels it has already flipped.
- ``'balanced-masked-ce'``: masked cross-entropy with class-balancing
  weights: every class present in the image carries the same total weight,
  so small objects count as much as the road.
- ``'segpgd'``: SegPGD's balanced cross-entropy (Gu et al., ECCV 2022),
  ``(1 - l_t) CE(correct) + l_t CE(wrong)`` with ``l_t = (t - 1) / (2T)``.
- ``'js'``: Jensen-Shannon divergence between the softmax and the one-hot
  label; bounded by log 2, so no pixel dominates.
- ``'masked-spherical'``: minus the true class's coordinate of the
  L2-normalised logits, on correct pixels.
- ``'tsallis'``: the Tsallis cross-entropy ``(1 - p_y^(1-q)) / (1 - q)``
  (TsallisPGD, IJCNN 2026) with ``q`` moving linearly from -2 at the first
  step to 1 (plain cross-entropy) at the last: early steps weigh all
  pixels alike, late ones push the stubborn pixels.  Its scale drifts with
  ``q``, so APGD controls its step size on plain cross-entropy
  (:data:`MONITORS`).
- ``'cospgd'``: CosPGD (Agnihotri et al., ICML 2024): cross-entropy
  weighted per pixel by the cosine similarity of ``sigmoid(logits)`` and
  the one-hot label (detached).
"""
import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import _check_logits, labelled_mask

PixelLoss = Callable[[Tensor, Tensor, int, int, int], Tensor]


def _prepare(logits: Tensor, labels: Tensor, ignore_index: int):
    """float32 logits, labels valid for indexing, the labelled mask."""
    _check_logits(logits, labels)
    mask = labelled_mask(labels, ignore_index)
    # Ignored pixels may hold any value (255, -1): index with a valid class.
    target = torch.where(mask, labels, torch.zeros_like(labels))
    return logits.float(), target, mask


def _per_sample_sum(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, values,
                       torch.zeros_like(values)).flatten(1).sum(1)


def _pixel_ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, reduction='none')


def _correct(logits: Tensor, target: Tensor) -> Tensor:
    return logits.detach().argmax(1) == target


def balance(step: int, steps: int) -> float:
    """SegPGD's weight of the wrong pixels at step ``t`` of ``T``:
    ``(t - 1) / (2T)``, from 0 at the first step towards 1/2."""
    return (step - 1) / (2 * steps)


def ce_loss(logits: Tensor,
            labels: Tensor,
            ignore_index: int,
            step: int = 1,
            steps: int = 1) -> Tensor:
    """Cross-entropy summed over labelled pixels."""
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        return _per_sample_sum(_pixel_ce(logits, target), mask)


def masked_ce_loss(logits: Tensor,
                   labels: Tensor,
                   ignore_index: int,
                   step: int = 1,
                   steps: int = 1) -> Tensor:
    """Cross-entropy summed over the labelled pixels that are correct."""
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        return _per_sample_sum(
            _pixel_ce(logits, target), mask & _correct(logits, target))


def segpgd_loss(logits: Tensor,
                labels: Tensor,
                ignore_index: int,
                step: int = 1,
                steps: int = 1) -> Tensor:
    """SegPGD's loss: ``(1 - l_t) CE`` on correct plus ``l_t CE`` on wrong
    labelled pixels, ``l_t = (t - 1) / (2T)``."""
    weight = balance(step, steps)
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        correct = _correct(logits, target)
        pixel_weight = torch.where(correct, 1 - weight, weight)
        return _per_sample_sum(pixel_weight * _pixel_ce(logits, target), mask)


def balanced_masked_ce_loss(logits: Tensor,
                            labels: Tensor,
                            ignore_index: int,
                            step: int = 1,
                            steps: int = 1) -> Tensor:
    """Masked cross-entropy with class-balancing weights.

    A pixel of class ``c`` weighs ``L / (K n_c)``, with ``n_c`` the
    image's labelled pixels of class ``c``, ``K`` the classes present and
    ``L`` the labelled pixels: each present class carries ``L / K`` of the
    total weight ``L`` (the scale of an unweighted sum).  The weights come
    from the labels, so they do not change while the attack runs.
    """
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        num_classes = logits.shape[1]
        onehot = F.one_hot(target, num_classes) * mask.unsqueeze(-1)
        counts = onehot.flatten(1, 2).sum(1).float()  # (N, K)
        present = (counts > 0).sum(1, keepdim=True).clamp(min=1)
        labelled = counts.sum(1, keepdim=True)
        class_weight = torch.where(counts > 0,
                                   labelled / (present * counts.clamp(min=1)),
                                   torch.zeros_like(counts))
        pixel_weight = class_weight.gather(1,
                                           target.flatten(1)).view_as(target)
        pixel_loss = pixel_weight * _pixel_ce(logits, target)
        return _per_sample_sum(pixel_loss, mask & _correct(logits, target))


def tsallis_q(step: int, steps: int) -> float:
    """The Tsallis entropic index at step ``t`` of ``T``: from -2 at the
    first step linearly to 1 at the last."""
    if steps <= 1:
        return 1.0
    return -2.0 + 3.0 * (step - 1) / (steps - 1)


def tsallis_loss(logits: Tensor,
                 labels: Tensor,
                 ignore_index: int,
                 step: int = 1,
                 steps: int = 1) -> Tensor:
    """Tsallis cross-entropy ``(1 - p_y^(1-q)) / (1 - q)``, summed over
    labelled pixels, ``q`` from :func:`tsallis_q` (at ``q = 1`` it is the
    cross-entropy ``-log p_y``)."""
    q = tsallis_q(step, steps)
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        log_p = -_pixel_ce(logits, target)
        if q == 1:
            pixel_loss = -log_p
        else:
            pixel_loss = -torch.expm1((1 - q) * log_p) / (1 - q)
        return _per_sample_sum(pixel_loss, mask)


def js_loss(logits: Tensor,
            labels: Tensor,
            ignore_index: int,
            step: int = 1,
            steps: int = 1) -> Tensor:
    """Jensen-Shannon divergence of softmax and one-hot label, summed.

    With ``p`` the true class's probability the divergence has the closed
    form ``log 2 - ((1 + p) log(1 + p) - p log p) / 2`` (0 when ``p = 1``,
    log 2 when ``p = 0``); written with ``log p`` for stability.
    """
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        log_p = -_pixel_ce(logits, target)
        prob = log_p.exp()
        divergence = math.log(2) - 0.5 * (
            (1 + prob) * F.softplus(log_p) - prob * log_p)
        return _per_sample_sum(divergence, mask)


def masked_spherical_loss(logits: Tensor,
                          labels: Tensor,
                          ignore_index: int,
                          step: int = 1,
                          steps: int = 1) -> Tensor:
    """Minus the true coordinate of the L2-normalised logits, summed over
    correct labelled pixels."""
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        unit = F.normalize(logits, dim=1)
        true = unit.gather(1, target.unsqueeze(1)).squeeze(1)
        return _per_sample_sum(-true, mask & _correct(logits, target))


def cospgd_loss(logits: Tensor,
                labels: Tensor,
                ignore_index: int,
                step: int = 1,
                steps: int = 1) -> Tensor:
    """CosPGD: pixel CE weighted by ``cos(sigmoid(z), onehot(y))``."""
    with torch.autocast(logits.device.type, enabled=False):
        logits, target, mask = _prepare(logits, labels, ignore_index)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)
        weight = F.cosine_similarity(
            torch.sigmoid(logits.detach()), onehot.float(), dim=1)
        return _per_sample_sum(weight * _pixel_ce(logits, target), mask)


LOSSES: Dict[str, PixelLoss] = {
    'ce': ce_loss,
    'masked-ce': masked_ce_loss,
    'balanced-masked-ce': balanced_masked_ce_loss,
    'segpgd': segpgd_loss,
    'js': js_loss,
    'masked-spherical': masked_spherical_loss,
    'tsallis': tsallis_loss,
    'cospgd': cospgd_loss,
}

#: Losses whose scale drifts over the attack, and the loss on which APGD
#: decides its step size for them instead.
MONITORS: Dict[str, str] = {'tsallis': 'ce'}


def check_loss(name: str) -> str:
    """The canonical (lower-case) name of a loss; unknown names list what
    exists."""
    if not isinstance(name, str) or name.lower() not in LOSSES:
        raise ValueError(f'unknown attack loss {name!r}; choose one of '
                         f'{", ".join(LOSSES)}')
    return name.lower()


def get_loss(name: str) -> PixelLoss:
    """The pixel loss called ``name``; unknown names list what exists."""
    return LOSSES[check_loss(name)]

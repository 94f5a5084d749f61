"""Tensor-level attack interface and the objectives the attacks share.

Conventions of every attack in this package:

- ``images`` is a float ``(N, C, H, W)`` tensor with pixels in [0, 1].
- ``forward`` maps such a tensor to logits ``(N, K, H', W')`` at the
  resolution of ``labels`` ``(N, H', W')`` (int64).
- Pixels whose label equals ``ignore_index`` count nowhere: not in the
  loss, not in the margin, not in any mean's denominator.
- Objectives are computed in float32 with autocast switched off, and the
  gradient is taken of the per-sample SUM over labelled pixels.  A
  per-sample positive scale changes neither ``sign(grad)`` nor the Fast
  Newton ratio ``g / ||grad g||_1``, and sums keep half-precision gradients
  away from underflow (a mean over 10^5 pixels would push them to 1e-5).
- ``AttackOutput.eps[i]`` is the L-inf radius of the step sample ``i``
  received; it is 0 for every sample the attack left unchanged (no labelled
  pixel, a zero or non-finite gradient, or, for the Fast Newton Method, a
  sample that is already misclassified on average).
- ``AttackOutput.forwards[i]`` / ``backwards[i]`` count the forward and
  backward passes the attack spent on sample ``i`` (its budget).
- ``forward`` treats samples independently (a segmentor in eval mode
  does), so attacks may call it on a subset of the batch, e.g. to stop
  early on images that are already fully misclassified.  A forward that
  needs per-sample context offers ``forward.subset(index)``, returning the
  forward of those samples; see :func:`restrict_forward`.
"""
import copy
import math
import numbers
from dataclasses import dataclass
from typing import (Callable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple)

import torch
import torch.nn.functional as F
from torch import Tensor

ForwardFn = Callable[[Tensor], Tensor]


@dataclass
class AttackOutput:
    """Result of an attack.

    Attributes:
        images (Tensor): Adversarial images ``(N, C, H, W)`` in [0, 1].
        eps (Tensor): ``(N,)`` float32 radius each sample received.
        forwards (Tensor, optional): ``(N,)`` int64 forward passes spent on
            each sample (filled in by :meth:`BaseAttack.__call__`).
        backwards (Tensor, optional): ``(N,)`` int64 backward passes.
    """
    images: Tensor
    eps: Tensor
    forwards: Optional[Tensor] = None
    backwards: Optional[Tensor] = None


def restrict_forward(forward: ForwardFn, index: Tensor) -> ForwardFn:
    """The forward of the samples ``index`` of the batch (a sub-batch).

    Uses ``forward.subset(index)`` when the forward offers it; a plain
    callable is per-sample by contract and is returned as it is.
    """
    subset = getattr(forward, 'subset', None)
    return forward if subset is None else subset(index)


class CountingForward:
    """Counts the forward and backward passes a forward runs per sample.

    A call counts one forward for every sample of its batch and one
    backward when its input requires grad (every attack takes the input
    gradient by ``backward`` of what it computed from that input).

    Args:
        forward (callable): The forward to count.
        batch (int): Batch size of the full problem.
    """

    def __init__(self, forward: ForwardFn, batch: int) -> None:
        self.forward = forward
        self.index = torch.arange(batch)
        self.forwards = torch.zeros(batch, dtype=torch.long)
        self.backwards = torch.zeros(batch, dtype=torch.long)

    def __call__(self, images: Tensor) -> Tensor:
        self.forwards[self.index] += 1
        if images.requires_grad:
            self.backwards[self.index] += 1
        return self.forward(images)

    def subset(self, index: Tensor) -> 'CountingForward':
        """A counter of the sub-batch ``index`` sharing these counts."""
        index = index.cpu()
        child = copy.copy(self)
        child.forward = restrict_forward(self.forward, index)
        child.index = self.index[index]
        return child

    def fill(self, out: AttackOutput) -> AttackOutput:
        """Write the counts so far into ``out``."""
        out.forwards = self.forwards.clone()
        out.backwards = self.backwards.clone()
        return out


def check_radius(name: str, value, allow_zero: bool = True) -> float:
    """Validate a radius-like argument and return it as a float.

    Args:
        name (str): Argument name used in the error message.
        value: The value to check.
        allow_zero (bool): Whether 0 is a valid value.

    Returns:
        float: ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a number in pixel units of [0, 1] '
                        f'(e.g. 0.03), but got {type(value).__name__} '
                        f'{value!r}')
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0
                                                 and not allow_zero):
        bound = '>= 0' if allow_zero else '> 0'
        raise ValueError(f'{name} must be finite and {bound} (pixels are in '
                         f'[0, 1], e.g. 0.03), but got {value}')
    return value


def check_positive_int(name: str, value) -> int:
    """Validate an integer argument that must be at least 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be an integer >= 1, but got '
                        f'{type(value).__name__} {value!r}')
    if value < 1:
        raise ValueError(f'{name} must be >= 1, but got {value}')
    return int(value)


def labelled_mask(labels: Tensor, ignore_index: int) -> Tensor:
    """Boolean mask of the pixels that carry a label."""
    return labels != ignore_index


def _check_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 4 or logits.shape[0] != labels.shape[0] or \
            logits.shape[2:] != labels.shape[1:]:
        raise ValueError(
            'forward must return logits (N, K, H, W) at the resolution of '
            f'labels (N, H, W), but got logits {tuple(logits.shape)} for '
            f'labels {tuple(labels.shape)}')


def cross_entropy_sum(logits: Tensor, labels: Tensor,
                      ignore_index: int) -> Tensor:
    """Per-sample sum of the pixel cross-entropy over labelled pixels.

    Args:
        logits (Tensor): ``(N, K, H, W)`` logits.
        labels (Tensor): ``(N, H, W)`` int64 labels.
        ignore_index (int): Label of pixels that do not count.

    Returns:
        Tensor: ``(N,)`` float32 sums.
    """
    _check_logits(logits, labels)
    with torch.autocast(logits.device.type, enabled=False):
        loss = F.cross_entropy(
            logits.float(),
            labels,
            ignore_index=ignore_index,
            reduction='none')
    return loss.flatten(1).sum(1)


def margin_sum(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Per-sample sum over labelled pixels of ``z_y - max_{k != y} z_k``.

    This is the paper's gain function (eq. 14), summed; divided by the
    number of labelled pixels it is ``gbar`` (eq. 17).

    Args:
        logits (Tensor): ``(N, K, H, W)`` logits.
        labels (Tensor): ``(N, H, W)`` int64 labels.
        ignore_index (int): Label of pixels that do not count.

    Returns:
        Tensor: ``(N,)`` float32 sums.
    """
    _check_logits(logits, labels)
    mask = labelled_mask(labels, ignore_index)
    # Ignored pixels may hold any value (255, -1): index with a valid class.
    target = torch.where(mask, labels, torch.zeros_like(labels)).unsqueeze(1)
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        true_logit = logits.gather(1, target).squeeze(1)
        others = logits.scatter(1, target, float('-inf'))
        margin = true_logit - others.amax(dim=1)
        margin = torch.where(mask, margin, torch.zeros_like(margin))
    return margin.flatten(1).sum(1)


class Evaluation(NamedTuple):
    """An objective, its input gradient and the accuracy at one point.

    Attributes:
        grad (Tensor): float32 ``(N, C, H, W)`` gradient (zeros when not
            asked for, and for non-finite samples).
        value (Tensor): float32 ``(N,)`` objective (0 where not finite).
        correct (Tensor): int64 ``(N,)`` labelled pixels predicted right.
        finite (Tensor): ``(N,)`` samples whose objective and gradient are
            finite.
    """
    grad: Tensor
    value: Tensor
    correct: Tensor
    finite: Tensor


def evaluate(
    forward: ForwardFn,
    images: Tensor,
    labels: Tensor,
    objective: Callable[[Tensor, Tensor, int], Tensor],
    ignore_index: int,
    with_grad: bool = True,
    monitor: Optional[Callable[[Tensor, Tensor, int], Tensor]] = None
) -> Evaluation:
    """One forward (and backward): objective, input gradient, accuracy.

    The gradient is computed with ``backward`` on a leaf that requires
    grad, which also works through reentrant activation checkpointing
    (``with_cp=True`` backbones), where ``torch.autograd.grad`` is refused.
    Callers that must not touch parameter gradients freeze the parameters
    first (see :mod:`mmseg_fnm.attacks.segmentor`).

    Args:
        forward (callable): Maps images to logits at label resolution.
        images (Tensor): ``(N, C, H, W)`` in [0, 1].
        labels (Tensor): ``(N, H, W)`` int64.
        objective (callable): ``objective(logits, labels, ignore_index)``
            returning ``(N,)`` per-sample values.
        ignore_index (int): Label of pixels that do not count.
        with_grad (bool): Whether to run the backward pass.
        monitor (callable, optional): A second objective, computed from the
            same logits without a gradient, reported as ``value`` instead
            of the objective (e.g. to judge progress on a loss whose scale
            changes over the attack).

    Returns:
        Evaluation: Everything detached; nothing non-finite leaves it.
    """
    with torch.enable_grad() if with_grad else torch.no_grad():
        x = images.detach().clone().requires_grad_(with_grad)
        logits = forward(x)
        value = objective(logits, labels, ignore_index)
        if with_grad and value.requires_grad:
            value.sum().backward()
        if monitor is not None:
            with torch.no_grad():
                value = monitor(logits.detach(), labels, ignore_index)
    correct = correct_pixels(logits.detach(), labels, ignore_index)
    grad = x.grad if with_grad else None
    if grad is None:  # not asked for, or independent of the input
        grad = torch.zeros_like(images, dtype=torch.float32)
    grad = grad.float()
    value = value.detach().float()
    finite = torch.isfinite(grad).flatten(1).all(1) & torch.isfinite(value)
    # Unconditional: asking whether all are finite would wait for the GPU.
    grad = torch.where(finite.view(-1, *([1] * (grad.dim() - 1))), grad, 0.)
    value = torch.where(finite, value, 0.)
    return Evaluation(grad, value, correct, finite)


def correct_pixels(logits: Tensor, labels: Tensor,
                   ignore_index: int) -> Tensor:
    """Per-sample number of labelled pixels whose argmax is the label."""
    hit = (logits.argmax(1) == labels) & labelled_mask(labels, ignore_index)
    return hit.flatten(1).sum(1)


def input_gradient(
    forward: ForwardFn,
    images: Tensor,
    labels: Tensor,
    objective: Callable[[Tensor, Tensor, int], Tensor],
    ignore_index: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradient of a per-sample objective with respect to the input.

    Args:
        forward (callable): Maps images to logits at label resolution.
        images (Tensor): ``(N, C, H, W)`` in [0, 1].
        labels (Tensor): ``(N, H, W)`` int64.
        objective (callable): ``objective(logits, labels, ignore_index)``
            returning ``(N,)`` per-sample values.
        ignore_index (int): Label of pixels that do not count.

    Returns:
        tuple[Tensor, Tensor, Tensor]: The float32 gradient ``(N, C, H, W)``,
        the float32 objective ``(N,)`` (both detached) and a ``(N,)`` mask
        of the samples where both are finite (see :func:`evaluate`).
    """
    result = evaluate(forward, images, labels, objective, ignore_index)
    return result.grad, result.value, result.finite


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape ``(N,)`` values to broadcast against ``(N, C, H, W)``."""
    return values.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def active_samples(grad: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Samples with at least one labelled pixel and a non-zero gradient."""
    has_label = labelled_mask(labels, ignore_index).flatten(1).any(1)
    return has_label & (grad.flatten(1) != 0).any(1)


class BaseAttack:
    """Base class of the L-inf attacks.

    Subclasses implement :meth:`perturb`.  Attacks are plain objects: they
    know nothing of mmseg or the Runner, only ``forward``, images and
    labels.  Randomised attacks draw from ``generator`` when one is given,
    so that callers can make them reproducible.
    """

    #: Whether the attack has a radius that :meth:`with_radius` can set.
    has_radius: bool = True
    #: Whether :meth:`sweep` gives a robustness curve over radii.
    sweepable: bool = True

    def __call__(self,
                 forward: ForwardFn,
                 images: Tensor,
                 labels: Tensor,
                 ignore_index: int = 255,
                 generator: Optional[torch.Generator] = None) -> AttackOutput:
        """Attack ``images``.

        Args:
            forward (callable): Maps float images ``(N, C, H, W)`` in [0, 1]
                to logits ``(N, K, H, W)`` at label resolution.
            images (Tensor): ``(N, C, H, W)`` floats in [0, 1].
            labels (Tensor): ``(N, H, W)`` int64 labels.
            ignore_index (int): Label of unlabelled pixels.
            generator (torch.Generator, optional): Source of randomness.

        Returns:
            AttackOutput: Adversarial images and per-sample radii.
        """
        self._check_inputs(images, labels)
        images = images.detach()
        counter = CountingForward(forward, images.shape[0])
        out = self.perturb(counter, images, labels, ignore_index, generator)
        counter.fill(out)
        # Guard the contract even if a subclass slips: range and finiteness.
        adv = torch.where(torch.isfinite(out.images), out.images, images)
        out.images = adv.clamp_(0, 1).to(images.dtype)
        out.eps = torch.nan_to_num(out.eps.float(), nan=0., posinf=0.)
        return out

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        """Compute the adversarial examples (inputs already checked)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """Name of the attack in reports (default: its type)."""
        return type(self).__name__

    @property
    def max_radius(self) -> Optional[float]:
        """Largest L-inf radius the attack can reach (None: unbounded)."""
        return getattr(self, 'eps', None)

    def with_radius(self, eps: float) -> 'BaseAttack':
        """A copy of this attack with radius ``eps``."""
        if not self.has_radius:
            raise TypeError(f'{type(self).__name__} chooses its own radius; '
                            'it cannot be swept over radii')
        attack = copy.copy(self)
        attack.eps = check_radius('eps', eps)
        return attack

    def sweep(
        self,
        forward: ForwardFn,
        images: Tensor,
        labels: Tensor,
        epsilons: Sequence[float],
        ignore_index: int = 255,
        generator: Optional[torch.Generator] = None,
    ) -> Iterator[Tuple[float, AttackOutput]]:
        """Attack the same batch at several radii.

        The default runs the attack once per radius and skips the work at
        radius 0.  Attacks that can share work between radii override it.

        Yields:
            tuple[float, AttackOutput]: Each radius and its result.
        """
        for eps in epsilons:
            if eps == 0:
                yield eps, self.unchanged(images)
            else:
                yield eps, self.with_radius(eps)(forward, images, labels,
                                                 ignore_index, generator)

    @staticmethod
    def unchanged(images: Tensor) -> AttackOutput:
        """The clean batch as an attack output with radius 0."""
        batch = images.shape[0]
        return AttackOutput(
            images.detach().clone(),
            torch.zeros(batch, device=images.device),
            forwards=torch.zeros(batch, dtype=torch.long),
            backwards=torch.zeros(batch, dtype=torch.long))

    @staticmethod
    def _check_inputs(images: Tensor, labels: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4 or \
                not images.is_floating_point():
            raise ValueError('images must be a float tensor (N, C, H, W) in '
                             f'[0, 1], but got {getattr(images, "shape", "")}'
                             f' {getattr(images, "dtype", type(images))}')
        if not isinstance(labels, Tensor) or labels.dim() != 3 or \
                labels.shape[0] != images.shape[0]:
            raise ValueError('labels must be an int64 tensor (N, H, W) with '
                             'the same N as images, but got '
                             f'{getattr(labels, "shape", type(labels))}')
        if labels.dtype != torch.long:
            raise ValueError(f'labels must be int64, got {labels.dtype}')
        if not bool(torch.isfinite(images).all()):
            raise ValueError('images contain NaN or inf values')

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items()
                         if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


def uniform_like(shape: Sequence[int], low: Tensor, high: Tensor,
                 generator: Optional[torch.Generator],
                 device: torch.device) -> Tensor:
    """Uniform samples in ``[low, high)`` drawn from ``generator``.

    Drawn on the generator's device and moved to ``device``, so a CPU
    generator gives the same numbers whatever device the model is on.
    """
    gen_device = generator.device if generator is not None else device
    unit = torch.rand(
        list(shape), generator=generator, device=gen_device).to(device)
    return low + (high - low) * unit


def radii_tensor(eps: float, batch: int, device: torch.device) -> Tensor:
    """A ``(N,)`` float32 tensor filled with ``eps``."""
    return torch.full((batch, ), float(eps), device=device)


__all__: List[str] = [
    'AttackOutput', 'BaseAttack', 'CountingForward', 'Evaluation', 'ForwardFn',
    'check_radius', 'check_positive_int', 'correct_pixels',
    'cross_entropy_sum', 'evaluate', 'margin_sum', 'input_gradient',
    'restrict_forward', 'labelled_mask', 'per_sample', 'active_samples',
    'uniform_like', 'radii_tensor'
]

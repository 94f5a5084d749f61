"""Auto-PGD with segmentation losses, and the SEA ensemble built on it.

APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020), L-inf, as the
paper's Algorithm 1: step size ``2 eps``, momentum 0.75 (none on the first
step), and at the checkpoints ``w_j`` (after 22%, then ever shorter
windows: 22, 41, 57, 70, 80, 87, 93, 99 of 100 iterations) the step size of
an image is halved and it restarts from its best point when

1. the loss increased in fewer than ``rho * (w_j - w_{j-1})`` of the
   steps since the last checkpoint (``rho = 0.75``; the paper's strict
   ``<``, where the reference code uses ``<=``), or
2. the step size was not halved at the last checkpoint and the best loss
   has not improved since then.

For a loss whose scale drifts over the attack (``tsallis``) both
conditions and the best-loss point are judged on plain cross-entropy,
computed from the logits of the same forward pass (no extra pass).

Two "best" points per image are kept: the highest-loss point drives the
restarts (as in the paper); the adversarial example RETURNED is the
evaluated point with the lowest pixel accuracy (labelled pixels predicted
right), the quantity the evaluation scores.  Ties keep the earlier point.

For segmentation (Croce et al., "Towards Reliable Evaluation and Fast
Training of Robust Semantic Segmentation Models", ECCV 2024) an attack can
split its iterations over shrinking radii (``radius_schedule``): each stage
starts from the previous stage's best-loss point projected onto its ball;
only points inside the final radius ``eps`` are candidates for the result.
SEA runs APGD with each of its losses (the paper's: masked-ce,
balanced-masked-ce and js, 300 iterations each over ``2 eps``, ``1.5 eps``,
``eps`` with 30/30/40 percent of them) and keeps per image the adversarial
with the lowest pixel accuracy.

Early stopping: an image none of whose labelled pixels is predicted right
can get no lower, so it leaves the batch (and SEA's later losses).  The
result is the same as without it; only the budget differs.  A stage of
``n`` iterations costs ``n + 1`` forwards and ``n`` backwards per image
(the last point needs no gradient).
"""
import math
import numbers
from dataclasses import dataclass, fields
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import (AttackOutput, BaseAttack, ForwardFn, check_positive_int,
                   check_radius, evaluate, labelled_mask, per_sample,
                   radii_tensor, restrict_forward, uniform_like)
from .losses import LOSSES, MONITORS, check_loss, get_loss

#: Radius schedule of one stage at the attack's radius.
SINGLE_STAGE = ((1.0, 1.0), )
#: SEA's schedule: (radius factor, share of the iterations) per stage.
SEA_SCHEDULE = ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4))
#: SEA's losses, in the order it runs them.
SEA_LOSSES = ('masked-ce', 'balanced-masked-ce', 'js')


def checkpoints(iters: int) -> List[int]:
    """Iteration counts after which APGD checks its step size.

    ``w_1 = 0.22 n``; each window is ``0.03 n`` shorter than the previous
    one but at least ``0.06 n`` (all rounded down, at least 1), as in the
    paper and its reference code.  A check after the last iteration could
    change nothing and is left out.
    """
    first = max(int(0.22 * iters), 1)
    decrease = max(int(0.03 * iters), 1)
    shortest = max(int(0.06 * iters), 1)
    marks, done, length = [], 0, first
    while done + length < iters:
        done += length
        marks.append(done)
        length = max(length - decrease, shortest)
    return marks


def step_size_reduced(increases: Tensor, window: int, rho: float,
                      reduced_last: Tensor, best_last: Tensor,
                      best: Tensor) -> Tensor:
    """APGD's two conditions for halving the step size of each image.

    Args:
        increases (Tensor): ``(N,)`` steps of the window that raised the
            loss.
        window (int): Steps since the last checkpoint.
        rho (float): Fraction of increasing steps below which the step is
            halved (condition 1).
        reduced_last (Tensor): ``(N,)`` whether the step was halved at the
            last checkpoint.
        best_last (Tensor): ``(N,)`` best loss at the last checkpoint.
        best (Tensor): ``(N,)`` best loss now.

    Returns:
        Tensor: ``(N,)`` bool, the images whose step size is halved.
    """
    oscillating = increases < rho * window
    stalled = ~reduced_last & (best <= best_last)
    return oscillating | stalled


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not 0 < value <= 1:
        raise ValueError(f'{name} must be a number in (0, 1], got {value!r}')
    return float(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def check_schedule(schedule) -> Tuple[Tuple[float, float], ...]:
    """Validate ``((radius factor, share of iterations), ...)``."""
    hint = ('radius_schedule must be a list of (radius factor, share of '
            'the iterations) pairs with shares summing to 1 and the last '
            'factor 1, e.g. ((2, 0.3), (1.5, 0.3), (1, 0.4))')
    try:
        stages = tuple((float(f), float(s)) for f, s in schedule)
    except (TypeError, ValueError):
        raise ValueError(f'{hint}; got {schedule!r}') from None
    if not stages or any(not (math.isfinite(f) and f > 0 and 0 < s <= 1)
                         for f, s in stages) or \
            abs(sum(s for _, s in stages) - 1) > 1e-6 or stages[-1][0] != 1:
        raise ValueError(f'{hint}; got {schedule!r}')
    return stages


@dataclass
class _Stage:
    """Per-image state of the images an APGD stage still attacks."""
    index: Tensor  # positions in the full batch
    clean: Tensor
    labels: Tensor
    lower: Tensor
    upper: Tensor
    x: Tensor
    x_prev: Tensor
    grad: Tensor
    loss: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    loss_best_last: Tensor
    reduced_last: Tensor
    increases: Tensor
    step: Tensor

    def keep(self, mask: Tensor) -> None:
        """Drop the images where ``mask`` is False."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name)[mask])

    def project(self, x: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(x, self.lower), self.upper)


@dataclass
class BestAdversarial:
    """Lowest pixel accuracy found so far per image, and where.

    Attributes:
        correct (Tensor): ``(N,)`` int64 labelled pixels still predicted
            right at ``images`` (above the labelled count: none found yet).
        images (Tensor): ``(N, C, H, W)`` the points that achieved it.
    """
    correct: Tensor
    images: Tensor

    @classmethod
    def start(cls, images: Tensor, labels: Tensor,
              ignore_index: int) -> 'BestAdversarial':
        labelled = labelled_mask(labels, ignore_index).flatten(1).sum(1)
        return cls(labelled + 1, images.clone())

    def update(self, index: Tensor, correct: Tensor, images: Tensor,
               valid: Tensor) -> None:
        """Take the points that are strictly better (ties keep the old)."""
        better = valid & (correct < self.correct[index])
        self.correct[index] = torch.where(better, correct, self.correct[index])
        self.images[index] = torch.where(
            per_sample(better, images) > 0, images, self.images[index])


@ATTACKS.register_module()
class APGD(BaseAttack):
    """Auto-PGD, L-inf, with a segmentation loss (see the module docs).

    Args:
        eps (float): L-inf radius in [0, 1] pixel units. Defaults to 0.03.
        loss (str): Pixel loss to maximise, one of ``'ce'``,
            ``'masked-ce'``, ``'balanced-masked-ce'``, ``'segpgd'``,
            ``'js'``, ``'masked-spherical'``, ``'tsallis'``, ``'cospgd'``
            (see :mod:`mmseg_fnm.attacks.losses`). Defaults to ``'ce'``.
        iters (int): Iterations (gradient steps) over all stages.
            Defaults to 100 (the APGD paper's).
        radius_schedule (sequence): ``(radius factor, share of the
            iters)`` per stage; the last factor must be 1. Defaults
            to one stage at ``eps``.
        rho (float): Condition 1's fraction. Defaults to 0.75.
        momentum (float): Weight of the new step against the previous
            direction. Defaults to 0.75.
        random_start (bool): Start from a uniform point of the first ball
            instead of the clean image. Defaults to False.
        early_stop (bool): Stop on images whose labelled pixels are all
            misclassified (same result, smaller budget). Defaults to True.
    """

    def __init__(self,
                 eps: float = 0.03,
                 loss: str = 'ce',
                 iters: int = 100,
                 radius_schedule: Sequence[Tuple[float, float]] = SINGLE_STAGE,
                 rho: float = 0.75,
                 momentum: float = 0.75,
                 random_start: bool = False,
                 early_stop: bool = True) -> None:
        self.eps = check_radius('eps', eps)
        self.loss = check_loss(loss)
        self.iters = check_positive_int('iters', iters)
        self.radius_schedule = check_schedule(radius_schedule)
        self.rho = _check_fraction('rho', rho)
        self.momentum = _check_fraction('momentum', momentum)
        self.random_start = _check_bool('random_start', random_start)
        self.early_stop = _check_bool('early_stop', early_stop)
        self.stage_iterations()  # refuse a schedule with an empty stage

    @property
    def name(self) -> str:
        return f'APGD-{self.loss}'

    def stage_iterations(self) -> List[int]:
        """Iterations of each stage (the last stage takes the rest)."""
        shares = [share for _, share in self.radius_schedule]
        counts = [int(round(share * self.iters)) for share in shares]
        counts[-1] = self.iters - sum(counts[:-1])
        if min(counts) < 1:
            raise ValueError(
                f'iters={self.iters} is too few for the radius '
                f'schedule {self.radius_schedule}: a stage would get '
                f'{counts} iterations; raise iters')
        return counts

    def nominal_budget(self) -> Tuple[int, int]:
        """Forward and backward passes per image without early stopping."""
        stages = len(self.radius_schedule)
        return self.iters + stages, self.iters

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        if self.eps == 0:
            return self.unchanged(images)
        best = BestAdversarial.start(images, labels, ignore_index)
        self.attack_into(best, forward, images, labels, ignore_index,
                         generator)
        return result(best, images, labels, ignore_index, self.eps)

    def attack_into(self, best: BestAdversarial, forward: ForwardFn,
                    images: Tensor, labels: Tensor, ignore_index: int,
                    generator: Optional[torch.Generator]) -> None:
        """Run APGD on the images not yet solved and improve ``best``."""
        pixel_loss = get_loss(self.loss)
        monitor = MONITORS.get(self.loss)
        monitor = None if monitor is None else partial(
            get_loss(monitor), step=self.iters, steps=self.iters)

        def loss(step: int) -> Callable:
            # Step t of the whole attack (its stages together), 1-based;
            # the point after the last step counts as the last step.
            return partial(
                pixel_loss, step=min(step, self.iters), steps=self.iters)

        done = 0
        has_label = labelled_mask(labels, ignore_index).flatten(1).any(1)
        index = has_label.nonzero().squeeze(1)
        start = images
        for stage, ((factor, _), iters) in enumerate(
                zip(self.radius_schedule, self.stage_iterations())):
            if self.early_stop:
                index = index[best.correct[index] > 0]
            if index.numel() == 0:
                return
            radius = factor * self.eps
            noise = None
            if stage == 0 and self.random_start:
                # Drawn for the whole batch: the same numbers whichever
                # images are still attacked.
                zero = torch.zeros((), device=images.device)
                noise = uniform_like(images.shape, zero - radius,
                                     zero + radius, generator,
                                     images.device)[index]
            # A point outside the final ball is no adversarial of radius
            # eps; the clean start is inside every ball.
            candidate = factor <= 1
            stage_loss = partial(_shifted, loss, done)
            state = self._start_stage(forward, images, labels, index, start,
                                      radius, noise, stage_loss, monitor,
                                      ignore_index, best, candidate)
            state = self._run_stage(forward, state, stage_loss, monitor, iters,
                                    ignore_index, best, candidate)
            done += iters
            start = images.clone()
            start[state.index] = state.x_best
            index = state.index

    def _start_stage(self, forward, images, labels, index, start, radius,
                     noise, loss, monitor, ignore_index, best: BestAdversarial,
                     candidate: bool) -> _Stage:
        clean = images[index]
        lower = (clean - radius).clamp(0, 1)
        upper = (clean + radius).clamp(0, 1)
        x = start[index] if noise is None else clean + noise
        x = torch.minimum(torch.maximum(x, lower), upper)
        ev = evaluate(
            restrict_forward(forward, index),
            x,
            labels[index],
            loss(1),
            ignore_index,
            monitor=monitor)
        value = torch.where(ev.finite, ev.value, float('-inf'))
        is_clean = (x == clean).flatten(1).all(1)
        best.update(index, ev.correct, x, ev.finite & (is_clean | candidate))
        step = radii_tensor(2 * radius, len(index), images.device)
        return _Stage(
            index=index,
            clean=clean,
            labels=labels[index],
            lower=lower,
            upper=upper,
            x=x,
            x_prev=x,
            grad=ev.grad,
            loss=value,
            x_best=x,
            grad_best=ev.grad,
            loss_best=value,
            loss_best_last=value.clone(),
            reduced_last=torch.ones_like(ev.finite),
            increases=torch.zeros_like(value),
            step=step)

    def _run_stage(self, forward, s: _Stage, loss, monitor, iters: int,
                   ignore_index: int, best: BestAdversarial,
                   candidate: bool) -> _Stage:
        marks = set(checkpoints(iters))
        window_start = 0
        stage_forward = restrict_forward(forward, s.index)
        for i in range(iters):
            if self.early_stop:
                solved = best.correct[s.index] == 0
                if bool(solved.any()):
                    s.keep(~solved)
                    if s.index.numel() == 0:
                        break
                    stage_forward = restrict_forward(forward, s.index)
            last = i == iters - 1
            z = s.project(s.x + per_sample(s.step, s.x) * s.grad.sign())
            a = 1.0 if i == 0 else self.momentum
            x = s.project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev))
            s.x_prev, s.x = s.x, x
            ev = evaluate(
                stage_forward,
                x,
                s.labels,
                loss(i + 2),
                ignore_index,
                with_grad=not last,
                monitor=monitor)
            if candidate:
                best.update(s.index, ev.correct, x, ev.finite)
            value = torch.where(ev.finite, ev.value, float('-inf'))
            s.increases += (value > s.loss).float()
            s.loss, s.grad = value, ev.grad
            improved = per_sample(value > s.loss_best, x) > 0
            s.x_best = torch.where(improved, x, s.x_best)
            s.grad_best = torch.where(improved, ev.grad, s.grad_best)
            s.loss_best = torch.maximum(value, s.loss_best)
            if i + 1 in marks:
                reduce = step_size_reduced(s.increases, i + 1 - window_start,
                                           self.rho, s.reduced_last,
                                           s.loss_best_last, s.loss_best)
                window_start = i + 1
                s.reduced_last = reduce
                s.loss_best_last = s.loss_best.clone()
                s.increases.zero_()
                s.step = torch.where(reduce, s.step / 2, s.step)
                restart = per_sample(reduce, x) > 0
                s.x = torch.where(restart, s.x_best, s.x)
                s.grad = torch.where(restart, s.grad_best, s.grad)
        return s


def _shifted(loss: Callable[[int], Callable], offset: int,
             step: int) -> Callable:
    """``loss(offset + step)``: a stage's step ``step`` as a step of the
    whole attack."""
    return loss(offset + step)


def result(best: BestAdversarial, images: Tensor, labels: Tensor,
           ignore_index: int, eps: float) -> AttackOutput:
    """The best adversarials as an :class:`AttackOutput` (radius 0 where
    the clean image was kept)."""
    changed = (best.images != images).flatten(1).any(1)
    radii = radii_tensor(eps, images.shape[0], images.device)
    radii = torch.where(changed, radii, torch.zeros_like(radii))
    return AttackOutput(best.images, radii)


@ATTACKS.register_module()
class SEA(BaseAttack):
    """Segmentation Ensemble Attack (Croce et al., ECCV 2024).

    APGD with each loss in turn, each starting from the clean image with
    the full iteration budget over the radius schedule; per image the
    adversarial with the lowest pixel accuracy over all of them is kept
    (ties keep the earlier loss).  Images already fully misclassified skip
    the remaining losses.  Defaults are the paper's.

    Args:
        eps (float): L-inf radius in [0, 1] pixel units. Defaults to 0.03.
        losses (sequence[str]): APGD losses, in order. Defaults to
            ``('masked-ce', 'balanced-masked-ce', 'js')``, the paper's;
            adding ``'tsallis'`` goes beyond the paper.
        iters (int): APGD iterations per loss. Defaults to 300.
        radius_schedule (sequence): ``(radius factor, share)`` per stage.
            Defaults to ``((2, 0.3), (1.5, 0.3), (1, 0.4))``.
        early_stop (bool): Stop on fully misclassified images (same
            result, smaller budget). Defaults to True.
    """

    def __init__(self,
                 eps: float = 0.03,
                 losses: Sequence[str] = SEA_LOSSES,
                 iters: int = 300,
                 radius_schedule: Sequence[Tuple[float, float]] = SEA_SCHEDULE,
                 early_stop: bool = True) -> None:
        if isinstance(losses, str) or not losses:
            raise ValueError('losses must be a non-empty list of APGD '
                             f'losses from {", ".join(LOSSES)}; got '
                             f'{losses!r}')
        self.eps = check_radius('eps', eps)
        self.losses = tuple(str(loss).lower() for loss in losses)
        self.iters = check_positive_int('iters', iters)
        self.radius_schedule = check_schedule(radius_schedule)
        self.early_stop = _check_bool('early_stop', early_stop)
        self.attacks()  # validate the losses and the stages now

    def attacks(self) -> List[APGD]:
        """The APGD runs of the ensemble."""
        return [
            APGD(
                self.eps,
                loss=loss,
                iters=self.iters,
                radius_schedule=self.radius_schedule,
                early_stop=self.early_stop) for loss in self.losses
        ]

    def nominal_budget(self) -> Tuple[int, int]:
        """Forward and backward passes per image without early stopping."""
        budgets = [attack.nominal_budget() for attack in self.attacks()]
        return sum(f for f, _ in budgets), sum(b for _, b in budgets)

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        if self.eps == 0:
            return self.unchanged(images)
        best = BestAdversarial.start(images, labels, ignore_index)
        for attack in self.attacks():
            attack.attack_into(best, forward, images, labels, ignore_index,
                               generator)
        return result(best, images, labels, ignore_index, self.eps)

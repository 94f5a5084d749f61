"""SegPGD (Gu et al., "SegPGD: An Effective and Efficient Adversarial
Attack for Evaluating and Boosting Segmentation Robustness", ECCV 2022)."""
from functools import partial
from typing import Optional

import torch
from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import (AttackOutput, BaseAttack, ForwardFn, check_positive_int,
                   check_radius, input_gradient, labelled_mask, per_sample,
                   radii_tensor, uniform_like)
from .losses import segpgd_loss


@ATTACKS.register_module()
class SegPGD(BaseAttack):
    """PGD on SegPGD's balanced loss.

    Step ``t`` (of ``T``) ascends ``(1 - l_t) CE(correct pixels) + l_t
    CE(wrong pixels)`` with ``l_t = (t - 1) / (2T)``: first it flips the
    pixels still right, later it also keeps the flipped ones wrong.  Each
    step is projected onto the L-inf ball and [0, 1]; the final iterate is
    returned, as in the paper (APGD and SEA return their best iterate).

    Args:
        eps (float): L-inf radius in [0, 1] pixel units. Defaults to 0.03.
        alpha (float, optional): Step size; None means ``2.5 * eps /
            steps`` (Madry et al.'s rule, enough to cross the ball).  Set
            ``alpha`` and ``steps`` to a publication's protocol to compare
            with its numbers.
        steps (int): Iterations, one forward and one backward each
            (``T`` in the weights). Defaults to 20.
        random_start (bool): Start from a uniform point of the ball, as
            the paper's PGD does. Defaults to True.
    """

    def __init__(self,
                 eps: float = 0.03,
                 alpha: Optional[float] = None,
                 steps: int = 20,
                 random_start: bool = True) -> None:
        self.eps = check_radius('eps', eps)
        self.alpha = None if alpha is None else check_radius(
            'alpha', alpha, allow_zero=False)
        self.steps = check_positive_int('steps', steps)
        if not isinstance(random_start, bool):
            raise TypeError('random_start must be True or False, got '
                            f'{random_start!r}')
        self.random_start = random_start

    def step_size(self) -> float:
        """The step size at the current radius."""
        return 2.5 * self.eps / self.steps if self.alpha is None \
            else self.alpha

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        if self.eps == 0:
            return self.unchanged(images)
        has_label = labelled_mask(labels, ignore_index).flatten(1).any(1)
        eps = radii_tensor(self.eps, images.shape[0], images.device)
        eps = torch.where(has_label, eps, torch.zeros_like(eps))
        radius = per_sample(eps, images)
        lower = (images - radius).clamp(0, 1)
        upper = (images + radius).clamp(0, 1)
        adv = images
        if self.random_start:
            adv = uniform_like(images.shape, lower, upper, generator,
                               images.device)
        alpha = self.step_size()
        broken = torch.zeros_like(has_label)
        for step in range(1, self.steps + 1):
            loss = partial(segpgd_loss, step=step, steps=self.steps)
            grad, _, finite = input_gradient(forward, adv, labels, loss,
                                             ignore_index)
            broken |= ~finite
            adv = adv + alpha * grad.sign()
            adv = torch.minimum(torch.maximum(adv, lower), upper).detach()
        # A sample whose objective was not finite keeps its clean image.
        eps = torch.where(broken, torch.zeros_like(eps), eps)
        adv = torch.where(per_sample(eps, images) > 0, adv, images)
        return AttackOutput(adv, eps)

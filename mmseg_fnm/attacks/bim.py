"""Basic Iterative Method (and PGD with a random start)."""
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import (AttackOutput, BaseAttack, ForwardFn, check_positive_int,
                   check_radius, cross_entropy_sum, input_gradient,
                   labelled_mask, per_sample, radii_tensor, uniform_like)


@ATTACKS.register_module()
class BIM(BaseAttack):
    """Basic Iterative Method (paper eq. 4).

    ``x_{i+1} = Clip_{x, eps}(x_i + alpha * sign(grad_x L(x_i)))``, where
    each step is projected onto the L-inf ball of radius ``eps`` around the
    clean image and onto [0, 1].  With ``random_start=True`` it starts from
    a uniform point in the ball (PGD, Madry et al.).

    Args:
        eps (float): L-inf radius in [0, 1] pixel units.
        alpha (float): Step size of each iteration.
        steps (int): Number of iterations (gradients).
        random_start (bool): Start from a uniform point of the ball.
    """

    def __init__(self,
                 eps: float = 0.03,
                 alpha: float = 0.01,
                 steps: int = 3,
                 random_start: bool = False) -> None:
        self.eps = check_radius('eps', eps)
        self.alpha = check_radius('alpha', alpha, allow_zero=False)
        self.steps = check_positive_int('steps', steps)
        if not isinstance(random_start, bool):
            raise TypeError('random_start must be True or False, got '
                            f'{random_start!r}')
        self.random_start = random_start
        self._warn_if_unreachable(self.eps)

    def step_size(self) -> float:
        """The step size at the current radius."""
        return self.alpha

    def objective(self, step: int) -> Callable[[Tensor, Tensor, int], Tensor]:
        """The loss ascended at step ``step`` (1-based) of ``steps``."""
        return cross_entropy_sum

    def _warn_if_unreachable(self, eps: float) -> None:
        alpha = self.step_size()
        reach = alpha * self.steps
        if not self.random_start and reach < eps * (1 - 1e-6):
            warnings.warn(
                f'{type(self).__name__} cannot reach its radius eps={eps}: '
                f'alpha * steps = {alpha} * {self.steps} = {reach:g} < eps; '
                'raise alpha or steps',
                UserWarning,
                stacklevel=3)

    def with_radius(self, eps: float) -> 'BIM':
        attack = super().with_radius(eps)
        attack._warn_if_unreachable(attack.eps)
        return attack

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        if self.eps == 0:
            return self.unchanged(images)
        eps = radii_tensor(self.eps, images.shape[0], images.device)
        has_label = labelled_mask(labels, ignore_index).flatten(1).any(1)
        eps = torch.where(has_label, eps, torch.zeros_like(eps))
        radius = per_sample(eps, images)
        lower = (images - radius).clamp(0, 1)
        upper = (images + radius).clamp(0, 1)
        adv = images
        if self.random_start:
            adv = uniform_like(images.shape, lower, upper, generator,
                               images.device)
        moved = has_label if self.random_start else torch.zeros_like(has_label)
        broken = torch.zeros_like(has_label)
        alpha = self.step_size()
        for step in range(1, self.steps + 1):
            grad, _, finite = input_gradient(forward, adv, labels,
                                             self.objective(step),
                                             ignore_index)
            moved |= (grad.flatten(1) != 0).any(1)
            broken |= ~finite
            adv = adv + alpha * grad.sign()
            adv = torch.minimum(torch.maximum(adv, lower), upper).detach()
        # A sample the attack could not move, or whose objective was not
        # finite, keeps its clean image exactly.
        eps = torch.where(moved & ~broken, eps, torch.zeros_like(eps))
        adv = torch.where(per_sample(eps, images) > 0, adv, images)
        return AttackOutput(adv, eps)

"""The paper's Fast Newton Method (section 3, eqs. 17-19)."""
from typing import Optional

import torch
from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import (AttackOutput, BaseAttack, ForwardFn, check_radius,
                   input_gradient, labelled_mask, margin_sum, per_sample)


@ATTACKS.register_module()
class FastNewton(BaseAttack):
    """Fast Newton Method: one Newton step towards the decision boundary.

    For each sample, ``gbar`` is the mean over labelled pixels of the logit
    margin ``z_y - max_{k != y} z_k`` and, with ``g = grad_x gbar``::

        eps = gbar / ||g||_1,    x_adv = clip(x - eps * sign(g), 0, 1)

    i.e. the radius at which the linearised mean margin reaches 0.  One
    gradient, no hyper-parameter.  Since ``eps`` is invariant to scaling
    ``gbar``, it is computed from the per-sample margin sum.

    Decisions at the edges (each has a test):

    - ``gbar <= 0``: the sample is already misclassified on average, the
      closest adversarial is the sample itself: eps 0, image unchanged.
    - no labelled pixel, or a zero or non-finite gradient: eps 0, unchanged.
    - ``max_eps``: optional cap on the radius (None: no cap).

    Args:
        max_eps (float, optional): Largest radius allowed. Defaults to None.
    """

    has_radius = False
    sweepable = False

    def __init__(self, max_eps: Optional[float] = None) -> None:
        self.max_eps = None if max_eps is None else check_radius(
            'max_eps', max_eps, allow_zero=False)

    @property
    def max_radius(self) -> Optional[float]:
        return self.max_eps

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        grad, margin, _ = input_gradient(forward, images, labels, margin_sum,
                                         ignore_index)
        l1 = grad.flatten(1).abs().sum(1)
        has_label = labelled_mask(labels, ignore_index).flatten(1).any(1)
        valid = has_label & (margin > 0) & (l1 > 0)
        eps = torch.where(valid, margin / l1.clamp_min(1e-30),
                          torch.zeros_like(margin))
        # Float32 overflow of a tiny norm must not become an inf radius.
        eps = torch.where(torch.isfinite(eps), eps, torch.zeros_like(eps))
        if self.max_eps is not None:
            eps = eps.clamp(max=self.max_eps)
        adv = (images - per_sample(eps, images) * grad.sign()).clamp(0, 1)
        return AttackOutput(adv, eps)

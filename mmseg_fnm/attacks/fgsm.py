"""Fast Gradient Sign Method at a fixed and at a random radius."""
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import (AttackOutput, BaseAttack, CountingForward, ForwardFn,
                   active_samples, check_radius, cross_entropy_sum,
                   input_gradient, per_sample, radii_tensor, uniform_like)


def signed_step(images: Tensor, direction: Tensor, eps: Tensor) -> Tensor:
    """``clip(x + eps_i * direction, 0, 1)`` with per-sample ``eps``."""
    return (images + per_sample(eps, images) * direction).clamp(0, 1)


@ATTACKS.register_module()
class FGSM(BaseAttack):
    """Fast Gradient Sign Method (paper eq. 3).

    ``x_adv = clip(x + eps * sign(grad_x L), 0, 1)`` where ``L`` is the
    cross-entropy over labelled pixels.

    Args:
        eps (float): L-inf radius in [0, 1] pixel units. Defaults to 0.03.
    """

    def __init__(self, eps: float = 0.03) -> None:
        self.eps = check_radius('eps', eps)

    def radii(self, batch: int, device: torch.device,
              generator: Optional[torch.Generator]) -> Tensor:
        """Per-sample radii; FGSM uses ``eps`` for every sample."""
        return radii_tensor(self.eps, batch, device)

    def perturb(self, forward: ForwardFn, images: Tensor, labels: Tensor,
                ignore_index: int,
                generator: Optional[torch.Generator]) -> AttackOutput:
        eps = self.radii(images.shape[0], images.device, generator)
        if not bool((eps > 0).any()):
            return self.unchanged(images)
        grad, _, _ = input_gradient(forward, images, labels, cross_entropy_sum,
                                    ignore_index)
        eps = torch.where(
            active_samples(grad, labels, ignore_index), eps,
            torch.zeros_like(eps))
        return AttackOutput(signed_step(images, grad.sign(), eps), eps)

    def sweep(
        self,
        forward: ForwardFn,
        images: Tensor,
        labels: Tensor,
        epsilons: Sequence[float],
        ignore_index: int = 255,
        generator: Optional[torch.Generator] = None,
    ) -> Iterator[Tuple[float, AttackOutput]]:
        """FGSM at several radii from ONE input gradient.

        The gradient does not depend on the radius, so a sweep costs one
        forward and one backward in total instead of one per radius; each
        radius reports that shared pass as its budget.
        """
        self._check_inputs(images, labels)
        images = images.detach()
        counter = CountingForward(forward, images.shape[0])
        direction = active = None
        for eps in epsilons:
            eps = check_radius('eps', eps)
            if eps == 0:
                yield eps, self.unchanged(images)
                continue
            if direction is None:
                grad, _, _ = input_gradient(counter, images, labels,
                                            cross_entropy_sum, ignore_index)
                direction = grad.sign()
                active = active_samples(grad, labels, ignore_index)
                del grad
            radii = radii_tensor(eps, images.shape[0], images.device)
            radii = torch.where(active, radii, torch.zeros_like(radii))
            yield eps, counter.fill(
                AttackOutput(signed_step(images, direction, radii), radii))


@ATTACKS.register_module()
class RandomFGSM(FGSM):
    """FGSM whose radius is drawn per sample from ``U(0, eps)``.

    The paper's "random FGSM" model (section 4.1) trains with it.

    Args:
        eps (float): Upper bound of the uniform radius. Defaults to 0.03.
    """

    sweepable = False

    def radii(self, batch: int, device: torch.device,
              generator: Optional[torch.Generator]) -> Tensor:
        zero = torch.zeros((), device=device)
        return uniform_like((batch, ), zero, zero + self.eps, generator,
                            device)

    def sweep(self, *args, **kwargs):
        # A sweep over the upper bound would not be a robustness curve.
        raise TypeError('RandomFGSM draws its radius at random; sweep FGSM '
                        'or BIM instead')

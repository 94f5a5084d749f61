"""SegPGD (Gu et al., "SegPGD: An Effective and Efficient Adversarial
Attack for Evaluating and Boosting Segmentation Robustness", ECCV 2022)."""
from functools import partial
from typing import Callable, Optional

from torch import Tensor

from mmseg_fnm.registry import ATTACKS
from .base import check_positive_int, check_radius
from .bim import BIM
from .losses import segpgd_loss


@ATTACKS.register_module()
class SegPGD(BIM):
    """PGD on SegPGD's balanced loss (BIM's iteration with its loss).

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
        self._warn_if_unreachable(self.eps)

    def step_size(self) -> float:
        """The step size at the current radius."""
        return 2.5 * self.eps / self.steps if self.alpha is None \
            else self.alpha

    def objective(self, step: int) -> Callable[[Tensor, Tensor, int], Tensor]:
        """SegPGD's balanced loss at step ``step`` of ``steps``."""
        return partial(segpgd_loss, step=step, steps=self.steps)

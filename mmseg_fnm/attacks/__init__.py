from .apgd import APGD, SEA
from .base import AttackOutput, BaseAttack
from .bim import BIM
from .fast_newton import FastNewton
from .fgsm import FGSM, RandomFGSM
from .losses import LOSSES
from .segmentor import SegmentorAttacker, build_attack
from .segpgd import SegPGD

__all__ = [
    'AttackOutput', 'BaseAttack', 'FGSM', 'RandomFGSM', 'BIM', 'FastNewton',
    'APGD', 'SEA', 'SegPGD', 'LOSSES', 'SegmentorAttacker', 'build_attack'
]

from .base import AttackOutput, BaseAttack
from .bim import BIM
from .fast_newton import FastNewton
from .fgsm import FGSM, RandomFGSM
from .segmentor import SegmentorAttacker, build_attack

__all__ = [
    'AttackOutput', 'BaseAttack', 'FGSM', 'RandomFGSM', 'BIM', 'FastNewton',
    'SegmentorAttacker', 'build_attack'
]

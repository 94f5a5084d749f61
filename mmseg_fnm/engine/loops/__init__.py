from .adversarial_train_loop import (AdversarialEpochBasedTrainLoop,
                                     AdversarialIterBasedTrainLoop,
                                     AttackRecord)
from .robustness_loop import (DEFAULT_ATTACKS, DEFAULT_EPSILONS,
                              RobustnessTestLoop, RobustnessValLoop)

__all__ = [
    'AdversarialIterBasedTrainLoop', 'AdversarialEpochBasedTrainLoop',
    'AttackRecord', 'RobustnessTestLoop', 'RobustnessValLoop',
    'DEFAULT_ATTACKS', 'DEFAULT_EPSILONS'
]

from .attack_example import (attack_sample, changed_fraction, init_segmentor,
                             load_sample, most_changed_test_image)

__all__ = [
    'attack_sample', 'changed_fraction', 'init_segmentor', 'load_sample',
    'most_changed_test_image'
]

from .adversarial_stats_hook import AdversarialStatsHook
from .random_state_hook import RandomStateHook
from .robustness_monitor_hook import RobustnessMonitorHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = [
    'AdversarialStatsHook', 'RandomStateHook', 'RobustnessMonitorHook',
    'SafeCheckpointHook'
]

from .adversarial_stats_hook import AdversarialStatsHook
from .robustness_monitor_hook import RobustnessMonitorHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = [
    'AdversarialStatsHook', 'RobustnessMonitorHook', 'SafeCheckpointHook'
]

from .robustness_metric import RobustnessMetric, format_eps, setting_key

__all__ = ['RobustnessMetric', 'format_eps', 'setting_key']

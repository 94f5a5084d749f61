from .robustness_plot import plot_robustness_curves

__all__ = ['plot_robustness_curves']

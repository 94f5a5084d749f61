from .attack_figure import colorize, draw_attack_figure, magnify
from .robustness_plot import plot_mean_std_curves, plot_robustness_curves

__all__ = [
    'colorize', 'draw_attack_figure', 'magnify', 'plot_mean_std_curves',
    'plot_robustness_curves'
]

"""Robustness curves in the style of the paper's figure 3."""
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

CLEAN = 'clean'


def plot_robustness_curves(models: Dict[str, List[dict]],
                           path: str,
                           attacks: Optional[Sequence[str]] = None,
                           metric: str = 'mIoU',
                           title: Optional[str] = None) -> None:
    """Plot ``metric`` against the attack radius.

    Args:
        models (dict[str, list[dict]]): Model name -> records of a
            ``robustness.json`` (``attack``, ``eps``, ``mIoU``, ...).  With
            one model, one line per attack; with several, one line per
            model and attack.
        path (str): Output image file (format from its suffix).
        attacks (Sequence[str], optional): Attacks to draw. Defaults to all
            but the clean row.
        metric (str): Record key on the y axis. Defaults to 'mIoU'.
        title (str, optional): Figure title.
    """
    figure, axes = plt.subplots(figsize=(5.5, 4), dpi=120)
    try:
        for model, records in models.items():
            names = attacks or list(
                dict.fromkeys(r['attack']
                              for r in records if r['attack'] != CLEAN))
            for attack in names:
                points = sorted((r['eps'], r[metric]) for r in records
                                if r['attack'] == attack)
                if not points:
                    continue
                xs, ys = zip(*points)
                label = ' '.join(part for part in (model, attack) if part)
                style = '--' if attack == 'worst' else '-'
                axes.plot(xs, ys, style, marker='o', markersize=3, label=label)
        _finish(figure, axes, path,
                'attack radius $\\varepsilon$ (pixels in [0, 1])',
                f'{metric} (%)', title, 0)
    finally:
        plt.close(figure)


def plot_mean_std_curves(curves: Dict[str, dict],
                         path: str,
                         xlabel: str,
                         ylabel: str,
                         title: Optional[str] = None,
                         references: Optional[Dict[str, float]] = None,
                         ylim_bottom: Optional[float] = 0) -> None:
    """Plot one mean curve per entry with a shaded band of +-1 std.

    For results over several seeds: robustness curves (x = radius) or
    training curves (x = iteration).

    Args:
        curves (dict[str, dict]): Label -> ``dict(x=[...], mean=[...],
            std=[...])``; ``std`` may be None (one seed: no band).
        path (str): Output image file (format from its suffix).
        xlabel (str): Label of the x axis.
        ylabel (str): Label of the y axis.
        title (str, optional): Figure title.
        references (dict[str, float], optional): Label -> y value of a
            dashed horizontal reference line.
        ylim_bottom (float, optional): Lower y limit; None: automatic.
            Defaults to 0.
    """
    figure, axes = plt.subplots(figsize=(5.5, 4), dpi=120)
    try:
        for label, curve in curves.items():
            xs, mean, std = curve['x'], curve['mean'], curve.get('std')
            if len(xs) != len(mean) or (std is not None
                                        and len(std) != len(mean)):
                raise ValueError(f'curve {label!r}: x, mean and std must '
                                 'have the same length')
            # Markers only where points are few (a sweep, not a log).
            marker = 'o' if len(xs) <= 20 else None
            line, = axes.plot(
                xs, mean, marker=marker, markersize=3, label=label)
            if std is not None:
                axes.fill_between(
                    xs, [m - s for m, s in zip(mean, std)],
                    [m + s for m, s in zip(mean, std)],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0)
        for label, value in (references or {}).items():
            axes.axhline(
                value, color='grey', linestyle='--', linewidth=1, label=label)
        _finish(figure, axes, path, xlabel, ylabel, title, ylim_bottom)
    finally:
        plt.close(figure)


def _finish(figure, axes, path: str, xlabel: str, ylabel: str,
            title: Optional[str], ylim_bottom: Optional[float]) -> None:
    """Labels, limits, grid, legend and title; save to ``path``."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if ylim_bottom is not None:
        axes.set_ylim(bottom=ylim_bottom)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize='small')
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)

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
        axes.set_xlabel('attack radius $\\varepsilon$ (pixels in [0, 1])')
        axes.set_ylabel(f'{metric} (%)')
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize='small')
        if title:
            axes.set_title(title)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)

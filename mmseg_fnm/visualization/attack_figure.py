"""An adversarial example and its effect, in the style of the paper's fig. 1.

Five panels: the clean image, its prediction, the adversarial image, its
prediction, and the perturbation magnified to the full display range.
"""
from typing import List, Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def colorize(seg: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class map ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in the palette.

    Labels outside the palette (e.g. the ignore label 255) are black.
    """
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    seg = np.asarray(seg).astype(np.int64)
    out = np.zeros(seg.shape + (3, ), dtype=np.uint8)
    valid = (seg >= 0) & (seg < len(palette))
    out[valid] = palette[seg[valid]]
    return out


def magnify(delta: np.ndarray) -> tuple:
    """Map a perturbation onto [0, 1], grey = unchanged.

    Args:
        delta (np.ndarray): Perturbation in [0, 1] pixel units.

    Returns:
        tuple[np.ndarray, float]: The display image ``0.5 + gain * delta``
        with its largest value at 0 or 1, and ``gain`` (1 when the
        perturbation is zero).
    """
    largest = float(np.abs(delta).max()) if delta.size else 0.
    gain = 0.5 / largest if largest > 0 else 1.
    return np.clip(0.5 + gain * delta, 0, 1), gain


def default_palette(num_classes: int, seed: int = 0) -> List[List[int]]:
    """A fixed random palette for data sets without one."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (num_classes, 3)).tolist()


def draw_attack_figure(image: np.ndarray,
                       clean_pred: np.ndarray,
                       adv_image: np.ndarray,
                       adv_pred: np.ndarray,
                       path: str,
                       palette: Sequence[Sequence[int]],
                       eps: float,
                       classes: Optional[Sequence[str]] = None,
                       title: Optional[str] = None) -> None:
    """Draw the five panels into ``path``.

    Args:
        image (np.ndarray): Clean RGB image ``(H, W, 3)`` in [0, 1].
        clean_pred (np.ndarray): Its predicted class map.
        adv_image (np.ndarray): Adversarial RGB image, same size as
            ``image``, in [0, 1].
        adv_pred (np.ndarray): Its predicted class map.
        path (str): Output image file (format from its suffix).
        palette (Sequence): RGB colour of each class.
        eps (float): L-inf radius of the perturbation in [0, 1] units.
        classes (Sequence[str], optional): Class names; the classes that
            appear in a prediction get a legend entry.
        title (str, optional): Figure title.
    """
    if image.shape != adv_image.shape:
        raise ValueError('image and adv_image must have one shape, got '
                         f'{image.shape} and {adv_image.shape}')
    perturbation, gain = magnify(adv_image - image)
    changed = float(np.mean(clean_pred != adv_pred)) * 100
    panels = [
        (image, 'clean image'),
        (colorize(clean_pred, palette), 'clean prediction'),
        (np.clip(adv_image, 0, 1), f'adversarial image ($\\varepsilon$ = '
         f'{eps:.3f})'),
        (colorize(adv_pred, palette),
         f'adversarial prediction\n({changed:.1f}% of pixels changed)'),
        (perturbation, f'perturbation $\\times${gain:.0f}\n'
         f'($\\varepsilon$ = {eps:.3f})'),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(16, 3.9), dpi=100)
    try:
        for ax, (picture, name) in zip(axes, panels):
            ax.imshow(picture, interpolation='nearest')
            ax.set_title(name, fontsize='medium')
            ax.axis('off')
        if classes is not None:
            present = np.union1d(np.unique(clean_pred), np.unique(adv_pred))
            colours = np.asarray(palette, dtype=float).reshape(-1, 3) / 255
            handles = [
                Patch(color=colours[k], label=classes[k]) for k in present
                if 0 <= k < min(len(classes), len(colours))
            ]
            if handles:
                figure.legend(
                    handles=handles,
                    loc='lower center',
                    ncol=min(len(handles), 10),
                    fontsize='small',
                    frameon=False)
        if title:
            figure.suptitle(title, fontsize='medium')
        figure.tight_layout(
            rect=(0, 0.08 if classes is not None else 0, 1,
                  0.92 if title else 1))
        figure.savefig(path)
    finally:
        plt.close(figure)

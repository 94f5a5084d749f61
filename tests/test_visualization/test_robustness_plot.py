"""Mean curves with +-std bands (several seeds)."""
import matplotlib.image
import numpy as np
import pytest

from mmseg_fnm.visualization import plot_mean_std_curves


def band_pixels(image):
    """Pixels that are neither white nor grey: lines and bands."""
    rgb = image[..., :3]
    return int((rgb.max(-1) - rgb.min(-1) > 0.05).sum())


def test_bands_are_drawn_only_with_a_std(tmp_path):
    eps = [0, 0.01, 0.02, 0.03, 0.04]
    mean = [80, 60, 40, 30, 20]
    with_band, without_band = tmp_path / 'band.png', tmp_path / 'line.png'
    plot_mean_std_curves(
        dict(fnm=dict(x=eps, mean=mean, std=[5, 5, 5, 5, 5])),
        str(with_band),
        xlabel='radius',
        ylabel='mIoU (%)',
        title='FGSM')
    plot_mean_std_curves(
        dict(fnm=dict(x=eps, mean=mean, std=None)),
        str(without_band),
        xlabel='radius',
        ylabel='mIoU (%)',
        references={'fixed radius': 30.0})
    banded = matplotlib.image.imread(str(with_band))
    plain = matplotlib.image.imread(str(without_band))
    assert banded.shape == plain.shape and banded.ndim == 3
    # the shaded band colours many more pixels than the line alone
    assert band_pixels(banded) > 2 * band_pixels(plain)


def test_long_series_and_lengths_checked(tmp_path):
    iters = list(range(1, 401))
    radius = list(np.linspace(0, 0.02, 400))
    path = tmp_path / 'radius.png'
    plot_mean_std_curves(
        dict(fnm=dict(x=iters, mean=radius, std=[0.001] * 400)),
        str(path),
        xlabel='iteration',
        ylabel='eps',
        ylim_bottom=None)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="curve 'fnm'"):
        plot_mean_std_curves(
            dict(fnm=dict(x=iters, mean=radius, std=[0.001])),
            str(tmp_path / 'bad.png'),
            xlabel='iteration',
            ylabel='eps')

import numpy as np
import pytest
from PIL import Image

from mmseg_fnm.visualization import colorize, draw_attack_figure, magnify


def test_colorize_uses_the_palette_and_blacks_out_ignore():
    seg = np.array([[0, 1], [255, 1]])
    out = colorize(seg, [[10, 20, 30], [40, 50, 60]])
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == out[1, 1].tolist() == [40, 50, 60]
    assert out[1, 0].tolist() == [0, 0, 0]


def test_magnify_fills_the_range_around_grey():
    delta = np.array([[-0.01, 0.0, 0.005]])
    shown, gain = magnify(delta)
    assert gain == pytest.approx(50)
    assert shown[0].tolist() == pytest.approx([0.0, 0.5, 0.75])
    shown, gain = magnify(np.zeros((2, 2)))
    assert gain == 1 and (shown == 0.5).all()


def test_draw_attack_figure(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((16, 20, 3))
    adv = np.clip(image + rng.uniform(-0.03, 0.03, image.shape), 0, 1)
    clean_pred = rng.integers(0, 3, (16, 20))
    adv_pred = clean_pred.copy()
    adv_pred[:4] = 2
    path = str(tmp_path / 'fig.png')
    draw_attack_figure(
        image,
        clean_pred,
        adv,
        adv_pred,
        path, [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        eps=0.03,
        classes=['a', 'b', 'c'],
        title='t')
    with Image.open(path) as figure:
        width, height = figure.size
    assert width > 3 * height  # five panels in a row
    with pytest.raises(ValueError, match='one shape'):
        draw_attack_figure(image, clean_pred, adv[:8], adv_pred, path,
                           [[0, 0, 0]], 0.03)

"""mmseg_fnm.apis: attacking single images of a trained segmentor."""
import os.path as osp

import numpy as np
import pytest

from mmseg_fnm.apis import (attack_sample, changed_fraction, init_segmentor,
                            load_sample, most_changed_test_image)
from mmseg_fnm.attacks import build_attack


@pytest.fixture
def segmentor(untrained_demo):
    cfg_file, checkpoint = untrained_demo
    return init_segmentor(cfg_file, checkpoint)


@pytest.fixture
def fast_bim():
    return build_attack(dict(type='BIM', alpha=0.01, steps=3)).with_radius(
        0.03)


def test_most_changed_test_image_is_the_largest_change(
        segmentor, fast_bim, one_thread):
    model, cfg, _ = segmentor
    best, image, fractions = most_changed_test_image(model, cfg, fast_bim)
    val_dir = osp.join(cfg.test_dataloader.dataset.data_root,
                       cfg.test_dataloader.dataset.data_prefix.img_path)
    # every test image is attacked, in data set order
    assert len(fractions) > 1
    assert len(set(fractions)) > 1, 'the pick must be able to go wrong'
    assert osp.dirname(image) == osp.normpath(val_dir)
    assert changed_fraction(best) == max(fractions)
    assert not best['pseudo_label']
    # the picked file attacked on its own with its label map: same result
    label = image.replace('img_dir', 'ann_dir')
    again = attack_sample(model, load_sample(cfg, image, label), fast_bim)
    np.testing.assert_array_equal(again['adv_pred'], best['adv_pred'])
    assert changed_fraction(again) == max(fractions)
    # the first N only
    _, _, first_two = most_changed_test_image(
        model, cfg, fast_bim, num_images=2)
    assert first_two == fractions[:2]


def test_without_a_label_map_the_clean_prediction_is_the_label(
        segmentor, fast_bim, one_thread):
    model, cfg, _ = segmentor
    _, image, _ = most_changed_test_image(model, cfg, fast_bim, num_images=1)
    result = attack_sample(model, load_sample(cfg, image), fast_bim)
    assert result['pseudo_label']
    assert 0 < changed_fraction(result) <= 1
    assert result['eps'] == pytest.approx(0.03)

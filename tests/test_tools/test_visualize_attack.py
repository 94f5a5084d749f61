"""tools/visualize_attack.py: the paper's figure 1 for one image."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from mmseg_fnm.apis import changed_fraction
from mmseg_fnm.utils import load_safe
from mmseg_fnm.utils.checkpoint_match import CheckpointMismatchError

# BIM at the paper's radius, 3 steps that reach it: seconds on one thread.
FAST_BIM = ['--eps', '0.03', '--alpha', '0.01', '--steps', '3']


@pytest.fixture
def image_and_label(demo_data_root):
    name = sorted(os.listdir(osp.join(demo_data_root, 'img_dir', 'val')))[0]
    return (osp.join(demo_data_root, 'img_dir', 'val',
                     name), osp.join(demo_data_root, 'ann_dir', 'val', name))


def check_result(result, eps):
    assert osp.getsize(result['out']) > 10000
    # predictions at the image's size; the attack changed some pixels
    assert result['clean_pred'].shape == result['adv_pred'].shape == (48, 48)
    assert (result['clean_pred'] != result['adv_pred']).any()
    delta = np.abs(result['adv_image'] - result['image']).max()
    assert 0 < delta <= eps + 1e-6
    assert result['eps'] == pytest.approx(eps)


def test_figure_without_a_label_map(untrained_demo, image_and_label, tmp_path,
                                    visualize_tool, one_thread):
    cfg_file, checkpoint = untrained_demo
    image, _ = image_and_label
    out = str(tmp_path / 'figures' / 'fig1.png')
    result = visualize_tool.main(
        [cfg_file, checkpoint, image, *FAST_BIM, '--out', out])
    check_result(result, 0.03)
    assert result['pseudo_label']
    assert 'labels: clean prediction (no label map given)' in result['title']
    assert 'BIM(eps=0.03, alpha=0.01, steps=3' in result['title']


def test_figure_with_a_label_map(untrained_demo, image_and_label, tmp_path,
                                 visualize_tool, one_thread):
    cfg_file, checkpoint = untrained_demo
    image, label = image_and_label
    out = str(tmp_path / 'fig1.png')
    result = visualize_tool.main([
        cfg_file, checkpoint, image, '--label', label, '--attack', 'FGSM',
        '--eps', '0.02', '--out', out
    ])
    check_result(result, 0.02)
    assert not result['pseudo_label']
    assert f'labels: {osp.basename(label)}' in result['title']


def test_bad_inputs(untrained_demo, image_and_label, tmp_path, visualize_tool):
    cfg_file, checkpoint = untrained_demo
    image, _ = image_and_label
    out = ['--out', str(tmp_path / 'fig.png')]
    state = load_safe(checkpoint, map_location='cpu')['state_dict']
    state.pop('decode_head.conv_seg.weight')
    wrong = str(tmp_path / 'no_classifier.pth')
    torch.save(dict(state_dict=state), wrong)
    with pytest.raises(CheckpointMismatchError) as info:
        visualize_tool.main([cfg_file, wrong, image, *out])
    assert 'missing from the checkpoint: decode_head.conv_seg.weight' in str(
        info.value)
    with pytest.raises(FileNotFoundError, match='nowhere.png'):
        visualize_tool.main(
            [cfg_file, checkpoint,
             str(tmp_path / 'nowhere.png'), *out])
    with pytest.raises(KeyError, match='Registered attacks'):
        visualize_tool.main(
            [cfg_file, checkpoint, image, '--attack', 'PGD', *out])
    assert not osp.exists(tmp_path / 'fig.png')


def test_without_an_image_the_most_changed_test_image_is_drawn(
        untrained_demo, tmp_path, visualize_tool, one_thread):
    cfg_file, checkpoint = untrained_demo
    out = str(tmp_path / 'picked.png')
    result = visualize_tool.main([
        cfg_file, checkpoint, *FAST_BIM, '--num-images', '4', '--out', out
    ])
    check_result(result, 0.03)
    fractions = result['fractions']
    assert len(fractions) == 4
    assert not result['pseudo_label']
    assert changed_fraction(result) == max(fractions)
    assert 'most changed of 4 test images; median ' in result['title']
    assert osp.basename(result['image_file']) in result['title']


def test_picking_arguments_are_checked(untrained_demo, image_and_label,
                                       tmp_path, visualize_tool):
    cfg_file, checkpoint = untrained_demo
    image, label = image_and_label
    out = ['--out', str(tmp_path / 'fig.png')]
    with pytest.raises(ValueError, match='--label belongs to an IMAGE'):
        visualize_tool.main([cfg_file, checkpoint, '--label', label, *out])
    with pytest.raises(ValueError, match='drop it or the IMAGE'):
        visualize_tool.main(
            [cfg_file, checkpoint, image, '--num-images', '2', *out])
    with pytest.raises(ValueError, match='at least 1, got 0'):
        visualize_tool.main([cfg_file, checkpoint, '--num-images', '0', *out])
    assert not osp.exists(tmp_path / 'fig.png')

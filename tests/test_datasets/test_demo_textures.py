import json
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import DATASETS

import mmseg_fnm  # noqa: F401  (registers the data sets)
from mmseg_fnm.datasets import (TEXTURES, check_generated_dataset,
                                prepare_generated_dataset,
                                render_texture_sample)
from mmseg_fnm.datasets.synthetic import MANIFEST_NAME, main
from mmseg_fnm.datasets.textures import (_BLOCK, IGNORE_INDEX, TEXTURE_CLASSES,
                                         TEXTURE_SOURCES, cut_window,
                                         load_source, source_blocks)

SMALL = dict(num_train=40, num_val=8, image_size=32, seed=1)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('textures') / 'demo_textures')
    prepare_generated_dataset(TEXTURES, root, **SMALL)
    return root


def _manifest(root):
    with open(osp.join(root, MANIFEST_NAME)) as f:
        return json.load(f)


def test_same_parameters_give_the_same_bytes(built, tmp_path):
    again = str(tmp_path / 'again')
    prepare_generated_dataset(TEXTURES, again, **SMALL)
    assert _manifest(again)['files'] == _manifest(built)['files']
    other = str(tmp_path / 'other')
    prepare_generated_dataset(TEXTURES, other, **dict(SMALL, seed=2))
    assert _manifest(other)['files'] != _manifest(built)['files']


def test_manifest_repairs_a_damaged_data_set(tmp_path):
    root = str(tmp_path / 'damaged')
    params = dict(SMALL, num_train=4, num_val=2)
    prepare_generated_dataset(TEXTURES, root, **params)
    assert check_generated_dataset(TEXTURES, root, params) is None
    label = osp.join(root, 'ann_dir', 'val', 'textures_00001.png')
    with open(label, 'r+b') as f:
        f.truncate(10)
    assert 'corrupt' in check_generated_dataset(TEXTURES, root, params)
    prepare_generated_dataset(TEXTURES, root, **params)
    assert check_generated_dataset(TEXTURES, root, params) is None
    # A shapes manifest is not a textures one.
    assert main(['--dataset', 'demo_shapes', '--root', root, '--check']) == 1
    assert main(['--dataset', 'demo_textures', '--root', root, '--check'] +
                [f'--{k.replace("_", "-")}={v}'
                 for k, v in params.items()]) == 0


def test_training_and_validation_cut_from_disjoint_blocks():
    rng = np.random.default_rng(0)
    for name in TEXTURE_SOURCES:
        shape = load_source(name).shape[:2]
        train = set(source_blocks(shape, 'train'))
        val = set(source_blocks(shape, 'val'))
        assert train and val and not train & val, name
        for split, blocks in (('train', train), ('val', val)):
            for _ in range(50):
                y, x, side = cut_window(rng, shape, split, (0.3, 1.0))
                top, left = y // _BLOCK * _BLOCK, x // _BLOCK * _BLOCK
                assert (top, left) in blocks
                # the whole window lies in that one block
                assert y + side <= top + _BLOCK and x + side <= left + _BLOCK


def test_every_class_present_and_borders_ignored(built):
    import cv2
    seen = set()
    for i in range(SMALL['num_train']):
        label = cv2.imread(
            osp.join(built, 'ann_dir', 'train', f'textures_{i:05d}.png'),
            cv2.IMREAD_UNCHANGED)
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(len(TEXTURE_CLASSES))) | {IGNORE_INDEX}


def test_render_is_deterministic_and_valid():
    a = render_texture_sample(np.random.default_rng(3), 'train')
    b = render_texture_sample(np.random.default_rng(3), 'train')
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    image, label = a
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert label.shape == (64, 64) and label.dtype == np.uint8
    assert image.std() > 10  # texture, not flat colour
    assert (label == IGNORE_INDEX).mean() < 0.25


def test_mmseg_pipeline_loads_it(built):
    init_default_scope('mmseg')
    dataset = DATASETS.build(
        dict(
            type='DemoTexturesDataset',
            data_root=built,
            gen_cfg=SMALL,
            ann_file='splits/val.txt',
            data_prefix=dict(
                img_path='img_dir/val', seg_map_path='ann_dir/val'),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')
            ]))
    assert len(dataset) == SMALL['num_val']
    assert dataset.metainfo['classes'] == TEXTURE_CLASSES
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 32, 32)
    assert sample['data_samples'].gt_sem_seg.data.shape[-2:] == (32, 32)


def test_textures_fnm_config_trains(demo_cfg, built):
    """configs/demo/pspnet_r18_textures_fnm.py at test size: the Runner
    builds the data set, the 9-class model and the FNM loop, and trains."""
    cfg = demo_cfg('textures_fnm', data_root=built, max_iters=2)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.gen_cfg = dict(SMALL)  # the built data set's
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    assert runner.model.decode_head.num_classes == len(TEXTURE_CLASSES)
    assert runner.train_loop.last_attack is not None

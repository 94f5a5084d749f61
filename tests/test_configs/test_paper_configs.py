"""The paper's configs (Cityscapes, VOC aug), the demo's adversarial
variants and the reuse configs: they resolve, their models, pipelines and
data sets build, and they hold the paper's settings (Sec. 4.1)."""
import copy
import functools
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, LOOPS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

import mmseg_fnm  # noqa: F401  (registers the plugin)
from mmseg_fnm.registry import ATTACKS

torch.set_num_threads(1)

CONFIGS = Path(__file__).parents[2] / 'configs'
PAPER = sorted((CONFIGS / 'cityscapes').glob('*.py')) + sorted(
    (CONFIGS / 'voc').glob('*.py'))
REUSE = sorted((CONFIGS / 'reuse').glob('*.py'))
DEMO = sorted((CONFIGS / 'demo').glob('pspnet_r18_demo_*.py')) + sorted(
    (CONFIGS / 'demo').glob('pspnet_r18_textures_*.py'))
ALL = PAPER + REUSE
ADVERSARIAL = [p for p in PAPER + DEMO if not p.stem.endswith('_basic')]
BASIC = [p for p in PAPER if p.stem.endswith('_basic')]
# The adversarial variants share their basic config's model (checked in
# test_adversarial_variant_changes_only_the_loop): no forward of their own.
FORWARD = BASIC + REUSE
# Sec. 4.1: FGSM eps 0.03, random FGSM eps ~ U(0, 0.03), BIM alpha 0.01,
# eps 0.03, N 3, FNM; adversarial input with probability 0.5.
PAPER_ATTACKS = {
    'fgsm': dict(type='FGSM', eps=0.03),
    'rfgsm': dict(type='RandomFGSM', eps=0.03),
    'bim3': dict(type='BIM', eps=0.03, alpha=0.01, steps=3),
    'fnm': dict(type='FastNewton'),
    'fnm-cap003': dict(type='FastNewton', max_eps=0.03),
}
STUB_CLASSES = (0, 1, 2, 5)  # label values written into the stub data


def _ids(paths):
    return [p.stem for p in paths]


@functools.lru_cache(maxsize=None)
def _load(path):
    """Load once per session (tests read configs, they never change them)."""
    return Config.fromfile(str(path))


def _to_bn(cfg):
    """Replace SyncBN by BN (SyncBN raises on CPU tensors)."""
    if isinstance(cfg, dict):
        return {
            k: 'BN' if k == 'type' and v == 'SyncBN' else _to_bn(v)
            for k, v in cfg.items()
        }
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_to_bn(c) for c in cfg)
    return cfg


def _leaf_datasets(ds):
    """The dataset configs under a (possibly concatenated) dataset."""
    if 'datasets' in ds:
        return [leaf for d in ds['datasets'] for leaf in _leaf_datasets(d)]
    if 'dataset' in ds:
        return _leaf_datasets(ds['dataset'])
    return [ds]


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _stub_images(rng, h, w):
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.choice(STUB_CLASSES, size=(h, w)).astype(np.uint8)
    label[:4] = 255  # an unlabelled border
    return img, label


def _stub_cityscapes(root):
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for i in range(2):
            name = f'aachen_{i:06d}_000019'
            img, label = _stub_images(rng, 64, 128)
            _write(
                root / 'leftImg8bit' / split / 'aachen' /
                f'{name}_leftImg8bit.png', img)
            _write(
                root / 'gtFine' / split / 'aachen' /
                f'{name}_gtFine_labelTrainIds.png', label)


def _stub_voc(root):
    rng = np.random.default_rng(0)
    names = {
        'train': ['2007_000032'],
        'aug': ['2008_000002'],
        'val': ['2007_000033']
    }
    for split, split_names in names.items():
        label_dir = 'SegmentationClassAug' if split == 'aug' \
            else 'SegmentationClass'
        for name in split_names:
            img, label = _stub_images(rng, 96, 128)
            _write(root / 'JPEGImages' / f'{name}.jpg', img)
            _write(root / label_dir / f'{name}.png', label)
        sets = root / 'ImageSets' / 'Segmentation'
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f'{split}.txt').write_text('\n'.join(split_names) + '\n')


@pytest.fixture(scope='module')
def stub_roots(tmp_path_factory):
    """Tiny data sets in mmseg's Cityscapes and VOC layouts."""
    base = tmp_path_factory.mktemp('data')
    _stub_cityscapes(base / 'cityscapes')
    _stub_voc(base / 'VOCdevkit' / 'VOC2012')
    return {
        'CityscapesDataset': base / 'cityscapes',
        'PascalVOCDataset': base / 'VOCdevkit' / 'VOC2012'
    }


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def _crop_from_name(path):
    h, w = re.search(r'-(\d+)x(\d+)_', path.stem + '_').groups()
    return int(h), int(w)


# ------------------------------------------------------------ building --

# The adversarial variants equal their basic config but for train_cfg
# (test_adversarial_variant_changes_only_the_loop), so models and data sets
# are built for the basic and reuse configs only.


@pytest.mark.parametrize('path', ALL, ids=_ids(ALL))
def test_config_resolves_and_pipelines_build(path):
    cfg = _load(path)
    assert cfg.default_scope == 'mmseg'
    assert 'mmseg_fnm' in cfg.custom_imports.imports
    for split in ('train', 'val', 'test'):
        for ds in _leaf_datasets(cfg[f'{split}_dataloader'].to_dict()):
            pipeline = [TRANSFORMS.build(t) for t in ds['pipeline']]
            assert len(pipeline) == len(ds['pipeline'])


@pytest.mark.parametrize('path', FORWARD, ids=_ids(FORWARD))
def test_data_sets_build_on_stub_data(path, stub_roots):
    """Train and val data sets on stub data: one sample each through the
    real pipelines."""
    cfg = _load(path)
    for split in ('train', 'val'):
        ds_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset.to_dict())
        for leaf in _leaf_datasets(ds_cfg):
            leaf['data_root'] = str(stub_roots[leaf['type']])
        dataset = DATASETS.build(ds_cfg)
        assert len(dataset) >= 1
        sample = dataset[0]
        img = sample['inputs']
        seg = sample['data_samples'].gt_sem_seg.data
        assert img.dtype == torch.uint8 and img.shape[0] == 3
        assert set(seg.unique().tolist()) <= set(STUB_CLASSES) | {255}
        if split == 'val':  # labels are loaded after the Resize
            assert seg.shape[-2:] == sample['data_samples'].ori_shape
        else:
            assert seg.shape[-2:] == img.shape[-2:]
            crop = next(t['crop_size']
                        for t in _leaf_datasets(ds_cfg)[0]['pipeline']
                        if t['type'] == 'RandomCrop')
            assert img.shape[1] <= crop[0] and img.shape[2] <= crop[1]


def _forward_loss(cfg, size=(64, 64)):
    # ConfigDict: mmseg's EncoderDecoder sets attributes on its sub-configs
    model_cfg = ConfigDict(_to_bn(cfg.model.to_dict()))
    # pad to the tiny input instead of the full crop: keeps the test fast
    model_cfg['data_preprocessor']['size'] = size
    model = MODELS.build(model_cfg).train()
    num_classes = model.decode_head.num_classes
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(
                0, 256, (3, ) + size, dtype=torch.uint8, generator=g)
            for _ in range(2)
        ],
        data_samples=[
            SegDataSample(
                gt_sem_seg=PixelData(
                    data=torch.randint(
                        0, num_classes, (1, ) + size, generator=g)))
            for _ in range(2)
        ])
    batch = model.data_preprocessor(data, True)
    return model(**batch, mode='loss')


@pytest.mark.parametrize('path', FORWARD, ids=_ids(FORWARD))
def test_model_forward(path):
    """The model builds; one training forward of a tiny batch."""
    losses = _forward_loss(_load(path))
    assert 'decode.loss_ce' in losses
    assert all(
        torch.isfinite(v).all() for k, v in losses.items()
        if k.endswith('loss_ce'))
    if path in PAPER:  # the paper drops PSPNet's auxiliary loss
        assert not any(k.startswith('aux') for k in losses)


# ------------------------------------------------------ paper settings --


@pytest.mark.parametrize('path', BASIC, ids=_ids(BASIC))
def test_paper_settings(path):
    cfg = _load(path)
    backbone = cfg.model.backbone
    assert backbone.type == 'PreActResNet' and backbone.depth == 50
    assert tuple(backbone.strides) == (1, 2, 1, 1)
    assert tuple(backbone.dilations) == (1, 1, 2, 4)
    assert backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.decode_head.type == 'PSPHead'
    assert cfg.model.get('auxiliary_head') is None
    assert cfg.model.decode_head.loss_decode.avg_non_ignore
    num_classes = 19 if 'cityscapes' in path.stem else 21
    assert cfg.model.decode_head.num_classes == num_classes

    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == \
        ('SGD', 0.01, 0.9, 1e-4)
    (poly, ) = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 0.9
    assert poly.end == cfg.train_cfg.max_iters

    # total batch 16 = the name's "<gpus>xb<per-gpu batch>"
    gpus, per_gpu = map(int, re.search(r'_(\d+)xb(\d+)-', path.stem).groups())
    assert cfg.train_dataloader.batch_size == per_gpu
    assert gpus * per_gpu == 16

    crop = _crop_from_name(path)
    assert crop == ((712, 712) if 'cityscapes' in path.stem else (472, 472))
    assert tuple(cfg.model.data_preprocessor.size) == crop
    for ds in _leaf_datasets(cfg.train_dataloader.to_dict()):
        steps = {t['type']: t for t in ds['pipeline']}
        assert tuple(steps['RandomCrop']['crop_size']) == crop
        assert steps['RandomCrop']['cat_max_ratio'] == 0.75
        assert tuple(steps['RandomResize']['ratio_range']) == (0.5, 2.0)
        assert steps['RandomRotate']['degree'] == 10
        assert steps['RandomFlip']['prob'] == 0.5
        assert 'RandomGaussianBlur' in steps
        assert 'PhotoMetricDistortion' not in steps
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert 'safe_checkpoint' in cfg.default_hooks


def _basic_of(path):
    return path.with_name(
        re.sub(r'_[a-z0-9-]+$', '_basic', path.stem) + '.py')


@pytest.mark.parametrize('path', ADVERSARIAL, ids=_ids(ADVERSARIAL))
def test_adversarial_variant_changes_only_the_loop(path):
    basic_path = _basic_of(path)
    assert basic_path.exists(), f'{path.name} needs {basic_path.name}'
    adv, basic = _load(path).to_dict(), _load(basic_path).to_dict()
    adv_loop, basic_loop = adv.pop('train_cfg'), basic.pop('train_cfg')
    assert adv == basic
    assert basic_loop['type'] == 'IterBasedTrainLoop'
    assert adv_loop.pop('type') == 'AdversarialIterBasedTrainLoop'
    assert adv_loop.pop('attack') == PAPER_ATTACKS[path.stem.split('_')[-1]]
    assert adv_loop.pop('adv_prob') == 0.5
    # the merge keeps max_iters / val_interval of the basic schedule
    basic_loop.pop('type')
    assert adv_loop == basic_loop and 'max_iters' in adv_loop


ADV_ALL = ADVERSARIAL + REUSE


@pytest.mark.parametrize('path', ADV_ALL, ids=_ids(ADV_ALL))
def test_loop_and_attack_are_registered(path):
    train_cfg = _load(path).train_cfg
    if LOOPS.get(train_cfg.type) is None:
        pytest.skip(f'{train_cfg.type} is not registered yet')
    attack = ATTACKS.build(train_cfg.attack)
    assert type(attack).__name__ == train_cfg.attack.type


@pytest.mark.parametrize('path', REUSE, ids=_ids(REUSE))
def test_reuse_config_keeps_mmseg_config(path, tmp_path):
    """Only the plugin import, the loop and the safe checkpoint hook are
    added to mmseg's own config."""
    text = path.read_text()
    (base, ) = re.findall(r"'(mmseg::[^']+)'", text)
    plain = tmp_path / 'plain.py'
    plain.write_text(f'_base_ = [{base!r}]\n')
    reuse, mmseg_cfg = _load(path).to_dict(), _load(plain).to_dict()
    reuse_loop, mmseg_loop = reuse.pop('train_cfg'), mmseg_cfg.pop('train_cfg')
    assert reuse_loop['type'] == 'AdversarialIterBasedTrainLoop'
    assert reuse_loop['attack'] == PAPER_ATTACKS['fnm']
    assert all(reuse_loop[k] == v for k, v in mmseg_loop.items()
               if k != 'type')
    hooks = reuse.pop('default_hooks')
    assert hooks.pop('safe_checkpoint') == dict(type='SafeCheckpointHook')
    assert hooks == mmseg_cfg.pop('default_hooks')
    assert reuse.pop('custom_imports')['imports'] == ['mmseg_fnm']
    mmseg_cfg.pop('custom_imports', None)
    assert reuse == mmseg_cfg


# ------------------------------------------------------ blur transform --


def test_random_gaussian_blur():
    rng = np.random.default_rng(0)
    img, label = _stub_images(rng, 32, 32)
    results = dict(
        img=img.copy(), gt_seg_map=label.copy(), seg_fields=['gt_seg_map'])
    blur = TRANSFORMS.build(dict(type='RandomGaussianBlur', prob=1.))
    out = blur(copy.deepcopy(results))
    assert out['img'].shape == img.shape and out['img'].dtype == np.uint8
    # noise loses contrast under a low-pass filter; labels stay
    assert out['img'].astype(float).std() < img.astype(float).std() * 0.7
    assert np.array_equal(out['gt_seg_map'], label)
    never = TRANSFORMS.build(dict(type='RandomGaussianBlur', prob=0.))
    assert np.array_equal(never(copy.deepcopy(results))['img'], img)
    with pytest.raises(ValueError, match='kernel_size'):
        TRANSFORMS.build(dict(type='RandomGaussianBlur', kernel_size=4))
    with pytest.raises(ValueError, match='prob'):
        TRANSFORMS.build(dict(type='RandomGaussianBlur', prob=1.5))

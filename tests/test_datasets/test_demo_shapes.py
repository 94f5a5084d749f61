import os
import os.path as osp
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, TRANSFORMS

import mmseg_fnm  # noqa: F401  (registers the data set and transforms)
from mmseg_fnm.datasets import DemoShapesDataset, check_demo_dataset
from mmseg_fnm.datasets.synthetic import MANIFEST_NAME

GEN = dict(num_train=10, num_val=4, image_size=48, seed=1)
CROP = (32, 32)
TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapShape'),
    dict(
        type='RandomResize',
        scale=(48, 48),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=CROP, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(48, 48), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapShape'),
    dict(type='PackSegInputs')
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    # as a config's default_scope='mmseg' does for the Runner
    init_default_scope('mmseg')


def _cfg(root, split='train', **kwargs):
    cfg = dict(
        type='DemoShapesDataset',
        data_root=str(root),
        gen_cfg=GEN,
        ann_file=f'splits/{split}.txt',
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        pipeline=TRAIN_PIPELINE if split == 'train' else TEST_PIPELINE)
    cfg.update(kwargs)
    return cfg


@pytest.fixture
def root(tmp_path):
    """A generated data set, built through the data set's auto_generate."""
    root = tmp_path / 'demo_shapes'
    DATASETS.build(_cfg(root, 'val'))
    return root


def test_auto_generate_and_real_pipeline(tmp_path):
    root = tmp_path / 'demo_shapes'
    assert not root.exists()
    train = DATASETS.build(_cfg(root, 'train'))
    assert check_demo_dataset(str(root), GEN) is None
    assert isinstance(train, DemoShapesDataset) and len(train) == 10
    assert train.metainfo['classes'][0] == 'background'
    assert len(train.metainfo['palette']) == len(train.metainfo['classes'])
    labels = []
    for i in range(len(train)):
        sample = train[i]
        inputs, data_sample = sample['inputs'], sample['data_samples']
        assert inputs.dtype == torch.uint8 and inputs.shape == (3, *CROP)
        gt = data_sample.gt_sem_seg.data
        assert gt.shape == (1, *CROP)
        labels.append(gt)
    values = set(torch.cat(labels).unique().tolist())
    assert 255 in values  # ignore pixels reach the model
    assert values - {0, 255}  # and object classes

    val = DATASETS.build(_cfg(root, 'val'))
    sample = val[0]
    assert sample['inputs'].shape == (3, 48, 48)
    assert sample['data_samples'].gt_sem_seg.data.shape == (1, 48, 48)
    assert sample['data_samples'].img_path.endswith('shapes_00000.png')


def test_existing_data_set_is_reused(root):
    manifest = osp.join(root, MANIFEST_NAME)
    mtime = os.stat(manifest).st_mtime_ns
    DATASETS.build(_cfg(root, 'train'))
    assert os.stat(manifest).st_mtime_ns == mtime


def test_corrupt_data_set_is_rebuilt_with_auto_generate(root):
    bad = osp.join(root, 'img_dir', 'val', 'shapes_00001.png')
    with open(bad, 'wb') as f:
        f.write(b'garbage')
    val = DATASETS.build(_cfg(root, 'val'))
    assert check_demo_dataset(str(root), GEN) is None
    assert val[1]['inputs'].shape == (3, 48, 48)


def test_missing_root_without_auto_generate(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(_cfg(missing, auto_generate=False))
    msg = str(info.value)
    assert str(missing) in msg
    assert 'python -m mmseg_fnm.datasets.synthetic' in msg
    assert not missing.exists()


def test_damaged_manifest_data_set_without_auto_generate(root):
    bad = osp.join(root, 'ann_dir', 'train', 'shapes_00002.png')
    with open(bad, 'ab') as f:
        f.write(b'x')
    with pytest.raises(OSError, match='shapes_00002.png'):
        DATASETS.build(_cfg(root, auto_generate=False))


def test_unreadable_image_is_named(root):
    # without a manifest (e.g. copied by hand), the header check catches it
    os.remove(osp.join(root, MANIFEST_NAME))
    bad = osp.join(root, 'img_dir', 'train', 'shapes_00004.png')
    with open(bad, 'wb') as f:
        f.write(b'not a png at all')
    with pytest.raises(OSError) as info:
        DATASETS.build(_cfg(root, auto_generate=False))
    assert bad in str(info.value)
    assert '--force' in str(info.value)


def test_truncated_label_is_named(root):
    # header intact, body cut: mmseg's LoadAnnotations would only say
    # "image file is truncated"; without a manifest the files are decoded
    os.remove(osp.join(root, MANIFEST_NAME))
    bad = osp.join(root, 'ann_dir', 'train', 'shapes_00003.png')
    with open(bad, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(OSError, match=bad):
        DATASETS.build(_cfg(root, auto_generate=False))


def test_missing_image_is_named(root):
    os.remove(osp.join(root, MANIFEST_NAME))
    bad = osp.join(root, 'img_dir', 'train', 'shapes_00007.png')
    os.remove(bad)
    with pytest.raises(FileNotFoundError, match=bad):
        DATASETS.build(_cfg(root, auto_generate=False))


def _shrink_label(root, split, stem):
    path = osp.join(root, 'ann_dir', split, stem + '.png')
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    cv2.imwrite(path, label[:40, :44])
    return path


def test_size_mismatch_is_named_at_build_time(root):
    os.remove(osp.join(root, MANIFEST_NAME))
    bad = _shrink_label(root, 'train', 'shapes_00005')
    with pytest.raises(ValueError) as info:
        DATASETS.build(_cfg(root, auto_generate=False))
    msg = str(info.value)
    assert bad in msg and '40x44' in msg and '48x48' in msg


@pytest.mark.parametrize('split', ['train', 'val'])
def test_size_mismatch_is_named_by_transform(root, split):
    # with the load-time check off, CheckSegMapShape still names the file,
    # in the train pipeline (before cropping) and the test pipeline (after
    # resizing)
    os.remove(osp.join(root, MANIFEST_NAME))
    bad = _shrink_label(root, split, 'shapes_00001')
    dataset = DATASETS.build(
        _cfg(root, split, auto_generate=False, check_files=False))
    dataset[0]  # intact sample passes
    with pytest.raises(ValueError, match=bad):
        dataset[1]


def test_check_seg_map_shape_transform():
    check = TRANSFORMS.build(dict(type='CheckSegMapShape'))
    ok = dict(
        gt_seg_map=np.zeros((4, 5), np.uint8),
        ori_shape=(4, 5),
        img_path='a.png',
        seg_map_path='a_label.png')
    assert check(dict(ok)) is not None
    with pytest.raises(ValueError, match='a_label.png'):
        check(dict(ok, ori_shape=(5, 4)))
    with pytest.raises(KeyError, match='LoadAnnotations'):
        check(dict(img_path='a.png', ori_shape=(4, 5)))


_DIST_SCRIPT = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    import mmseg_fnm  # noqa
    from mmengine.dist import get_rank
    from mmseg.registry import DATASETS
    from mmseg_fnm.datasets import synthetic

    write_all = synthetic._write_all

    def counting_write_all(*args):
        print(f'rank {get_rank()} writes', flush=True)
        return write_all(*args)

    synthetic._write_all = counting_write_all
    dist.init_process_group(backend='gloo')
    for root in sys.argv[1:]:
        cfg = dict(
            type='DemoShapesDataset', data_root=root,
            gen_cfg=dict(num_train=6, num_val=2, image_size=32, seed=0),
            ann_file='splits/train.txt',
            data_prefix=dict(img_path='img_dir/train',
                             seg_map_path='ann_dir/train'))
        try:
            dataset = DATASETS.build(cfg)
            print(f'rank {get_rank()} ok {len(dataset)}', flush=True)
        except Exception as e:
            print(f'rank {get_rank()} error {type(e).__name__}: {e}',
                  flush=True)
    dist.destroy_process_group()
""")


@pytest.mark.multiprocess
def test_two_ranks_build_once_and_fail_together(tmp_path):
    script = tmp_path / 'build.py'
    script.write_text(_DIST_SCRIPT)
    good = tmp_path / 'data' / 'shapes'
    # a folder the builder must not touch
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    out = subprocess.run(
        [
            sys.executable, '-m', 'torch.distributed.run', '--standalone',
            '--nproc_per_node=2',
            str(script),
            str(good),
            str(foreign)
        ],
        capture_output=True,
        text=True,
        timeout=240,  # a rank left waiting would hang here
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout
    # one builder, the other rank waited and then read the same data
    assert 'rank 0 ok 6' in log and 'rank 1 ok 6' in log
    assert log.count('writes') == 1
    assert check_demo_dataset(
        str(good), dict(num_train=6, num_val=2, image_size=32)) is None
    assert os.listdir(tmp_path / 'data') == ['shapes']
    # the builder fails: both ranks raise, neither hangs
    assert 'rank 0 error FileExistsError' in log
    assert 'rank 1 error RuntimeError: rank 0 failed' in log
    assert (foreign / 'notes.txt').read_text() == 'keep me'

import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mmseg_fnm.datasets import synthetic
from mmseg_fnm.datasets.synthetic import (CLASSES, IGNORE_INDEX, MANIFEST_NAME,
                                          check_demo_dataset,
                                          prepare_demo_dataset, render_sample)

SMALL = dict(num_train=12, num_val=6, image_size=48, seed=3)


def _snapshot(root):
    """{relative path: (bytes, mtime_ns, inode)} of every file under root."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            st = os.stat(path)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = (f.read(), st.st_mtime_ns,
                                                st.st_ino)
    return out


@pytest.fixture
def built(tmp_path):
    root = str(tmp_path / 'shapes')
    prepare_demo_dataset(root, **SMALL)
    return root


def test_render_sample_deterministic_and_valid():
    img_a, lab_a = render_sample(np.random.default_rng(5), image_size=64)
    img_b, lab_b = render_sample(np.random.default_rng(5), image_size=64)
    img_c, _ = render_sample(np.random.default_rng(6), image_size=64)
    assert img_a.shape == (64, 64, 3) and img_a.dtype == np.uint8
    assert lab_a.shape == (64, 64) and lab_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(lab_a, lab_b)
    assert not np.array_equal(img_a, img_c)
    values = set(np.unique(lab_a).tolist())
    assert values <= set(range(len(CLASSES))) | {IGNORE_INDEX}


def test_labels_cover_all_classes_and_ignore():
    counts = np.zeros(256, np.int64)
    for i in range(30):
        _, label = render_sample(np.random.default_rng(i), image_size=64)
        # every image has mixed edge pixels, hence ignore labels
        assert (label == IGNORE_INDEX).any()
        counts += np.bincount(label.ravel(), minlength=256)
    assert (counts[:len(CLASSES)] > 0).all()
    # ignore is a thin band, not a large part of the image
    assert 0.02 < counts[IGNORE_INDEX] / counts.sum() < 0.3


def test_occlusion_is_limited():
    owner = np.full((10, 10), -1)
    owner[:, :5] = 0  # object 0: 50 visible pixels
    owner[:2, 5:] = 1  # object 1: 10 visible pixels
    mask = np.zeros((10, 10), bool)
    mask[:, 3:5] = True  # hides 20 of object 0's 50
    assert not synthetic._hides_too_much(owner, mask, 0.4)
    assert synthetic._hides_too_much(owner, mask, 0.3)
    mask[0, 5:10] = True  # and half of object 1
    assert synthetic._hides_too_much(owner, mask, 0.45)
    # nothing may be hidden: crowded placements are dropped, not retried
    # forever, and the first object is always drawn
    for i in range(10):
        _, label = render_sample(
            np.random.default_rng(i), max_hidden=0.0, clutter_prob=0.0)
        assert (label != 0).any()


def test_colour_alone_does_not_predict_object_class():
    """A per-pixel colour lookup table fitted on some images tells objects
    from background (saturation), but not one object class from another:
    that takes shape."""
    n_bins = 8
    rng_ids = range(60)
    table = np.zeros((n_bins**3, len(CLASSES)), np.int64)
    samples = [render_sample(np.random.default_rng(i)) for i in rng_ids]

    def codes(img):
        q = (img.astype(np.int64) * n_bins) // 256
        return q[..., 0] * n_bins * n_bins + q[..., 1] * n_bins + q[..., 2]

    for img, lab in samples[:40]:
        keep = lab != IGNORE_INDEX
        np.add.at(table, (codes(img)[keep], lab[keep]), 1)
    pred_of_code = table.argmax(1)
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    for img, lab in samples[40:]:
        keep = lab != IGNORE_INDEX
        pred, gt = pred_of_code[codes(img)][keep], lab[keep]
        for c in range(len(CLASSES)):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
    iou = inter / np.maximum(union, 1)
    assert iou[0] > 0.9, iou  # background: by colour
    # object classes near chance (~0.1); shape is needed to do better
    assert iou[1:].mean() < 0.2, iou


def test_prepare_writes_mmseg_layout(built):
    for split, num in (('train', SMALL['num_train']), ('val',
                                                       SMALL['num_val'])):
        with open(osp.join(built, 'splits', f'{split}.txt')) as f:
            stems = f.read().split()
        assert len(stems) == num
        for stem in stems:
            img = cv2.imread(
                osp.join(built, 'img_dir', split, stem + '.png'),
                cv2.IMREAD_UNCHANGED)
            lab = cv2.imread(
                osp.join(built, 'ann_dir', split, stem + '.png'),
                cv2.IMREAD_UNCHANGED)
            assert img.shape == (48, 48, 3) and img.dtype == np.uint8
            assert lab.shape == (48, 48) and lab.dtype == np.uint8
    with open(osp.join(built, MANIFEST_NAME)) as f:
        manifest = json.load(f)
    assert manifest['params']['seed'] == SMALL['seed']
    assert check_demo_dataset(built, SMALL) is None
    assert check_demo_dataset(built) is None  # params from the manifest
    # no temporary folders are left next to it
    assert os.listdir(osp.dirname(built)) == ['shapes']


def test_same_seed_same_bytes_other_seed_differs(built, tmp_path):
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    prepare_demo_dataset(again, **SMALL)
    prepare_demo_dataset(other, **dict(SMALL, seed=SMALL['seed'] + 1))
    snap, snap_again = _snapshot(built), _snapshot(again)
    snap_other = _snapshot(other)
    assert sorted(snap) == sorted(snap_again) == sorted(snap_other)
    assert all(snap[k][0] == snap_again[k][0] for k in snap)
    pngs = [k for k in snap if k.endswith('.png')]
    assert all(snap[k][0] != snap_other[k][0] for k in pngs)
    # the splits are disjoint: no validation image repeats a training one
    train = {snap[k][0] for k in pngs if k.startswith('img_dir/train')}
    assert not any(snap[k][0] in train for k in pngs
                   if k.startswith('img_dir/val'))


def test_second_call_reuses_without_rewriting(built):
    before = _snapshot(built)
    assert prepare_demo_dataset(built, **SMALL) == osp.abspath(built)
    after = _snapshot(built)
    assert before == after  # same bytes, mtimes and inodes


def _delete_image(root):
    os.remove(osp.join(root, 'img_dir', 'train', 'shapes_00003.png'))


def _truncate_label(root):
    path = osp.join(root, 'ann_dir', 'val', 'shapes_00001.png')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def _flip_byte(root):
    # same size, different content: only the checksum can tell
    path = osp.join(root, 'img_dir', 'val', 'shapes_00002.png')
    with open(path, 'r+b') as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))


def _remove_manifest(root):
    os.remove(osp.join(root, MANIFEST_NAME))


def _garble_manifest(root):
    with open(osp.join(root, MANIFEST_NAME), 'w') as f:
        f.write('{"format": ')


def _remove_split_file(root):
    os.remove(osp.join(root, 'splits', 'train.txt'))


@pytest.mark.parametrize('damage', [
    _delete_image, _truncate_label, _flip_byte, _remove_manifest,
    _garble_manifest, _remove_split_file
])
def test_damaged_data_set_is_detected_and_rebuilt(built, damage):
    good = {k: v[0] for k, v in _snapshot(built).items()}
    damage(built)
    assert check_demo_dataset(built, SMALL) is not None
    prepare_demo_dataset(built, **SMALL)
    assert check_demo_dataset(built, SMALL) is None
    assert {k: v[0] for k, v in _snapshot(built).items()} == good


def test_changed_params_rebuild(built):
    bigger = dict(SMALL, num_val=SMALL['num_val'] + 2)
    problem = check_demo_dataset(built, bigger)
    assert problem is not None and 'generated with' in problem
    prepare_demo_dataset(built, **bigger)
    assert check_demo_dataset(built, bigger) is None
    assert len(os.listdir(osp.join(built, 'img_dir', 'val'))) == 8


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    root = tmp_path / 'mine'
    (root / 'img_dir').mkdir(parents=True)
    (root / 'img_dir' / 'holiday.jpg').write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='refusing to overwrite'):
        prepare_demo_dataset(str(root), **SMALL)
    assert (root / 'img_dir' / 'holiday.jpg').read_bytes() == b'precious'


def test_interrupted_build_leaves_nothing_complete(tmp_path, monkeypatch):
    root = str(tmp_path / 'shapes')
    calls = []

    def failing_render(rng, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # like Ctrl-C half way
        return render_sample(rng, **kwargs)

    monkeypatch.setattr(synthetic, 'render_sample', failing_render)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo_dataset(root, **SMALL)
    assert os.listdir(tmp_path) == []  # no root, no temporary folder
    monkeypatch.undo()
    prepare_demo_dataset(root, **SMALL)
    assert check_demo_dataset(root, SMALL) is None


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path):
    root = str(tmp_path / 'shapes')
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()  # its pid is now dead
    prefix = synthetic._tmp_prefix(root)
    dead = f'{prefix}{synthetic.socket.gethostname()}-{proc.pid}-deadbeef'
    alive = f'{prefix}{synthetic.socket.gethostname()}-{os.getpid()}-a1'
    for path in (dead, alive):
        os.makedirs(osp.join(path, 'img_dir'))
    prepare_demo_dataset(root, **SMALL)
    assert not osp.exists(dead)
    assert osp.exists(alive)  # may belong to a build still running


def test_bad_params_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        prepare_demo_dataset(str(tmp_path / 'x'), num_train=0)
    with pytest.raises(TypeError, match='image_size'):
        prepare_demo_dataset(str(tmp_path / 'x'), image_size=64.5)
    with pytest.raises(TypeError, match='unknown'):
        check_demo_dataset(str(tmp_path / 'x'), dict(colour='red'))


def test_command_line(tmp_path):
    root = str(tmp_path / 'cli')
    args = ['--root', root, '--num-train', '4', '--num-val', '2',
            '--image-size', '32']
    assert synthetic.main(args) == 0
    assert synthetic.main(args + ['--check']) == 0
    _remove_manifest(root)
    assert synthetic.main(args + ['--check']) == 1
    # as documented: python -m mmseg_fnm.datasets.synthetic
    out = subprocess.run(
        [sys.executable, '-m', 'mmseg_fnm.datasets.synthetic'] + args,
        capture_output=True,
        text=True,
        timeout=120)
    assert out.returncode == 0, out.stderr
    assert check_demo_dataset(
        root, dict(num_train=4, num_val=2, image_size=32)) is None

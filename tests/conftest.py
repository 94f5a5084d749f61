"""Shared fixtures: the project's demo configs, shrunk to test size.

The configs are the real files in ``configs/demo``; only sizes change
(a 16-image data set of 48x48 images, a slim network, 32x32 crops, no
dataloader workers), so that a Runner trains a few iterations in seconds.
"""
import copy
import functools
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = osp.join(REPO_ROOT, 'configs', 'demo')
TINY_GEN_CFG = dict(num_train=16, num_val=4, image_size=48, seed=0)
TINY_CROP = (32, 32)


@functools.lru_cache(maxsize=None)
def _parse_demo_cfg(name: str) -> Config:
    # Parsing a config and its bases is a good part of a short Runner
    # test's time: once per session and name.
    # 'fnm' -> pspnet_r18_demo_fnm.py, 'textures_fnm' ->
    # pspnet_r18_textures_fnm.py
    stem = name if name.startswith('textures_') else f'demo_{name}'
    return Config.fromfile(osp.join(DEMO_CONFIGS, f'pspnet_r18_{stem}.py'))


def load_demo_cfg(name: str = 'basic') -> Config:
    """``configs/demo/pspnet_r18_demo_{name}.py``, a copy of its own."""
    return copy.deepcopy(_parse_demo_cfg(name))


def shrink_demo_cfg(cfg: Config,
                    work_dir: str,
                    data_root: str,
                    max_iters: int = 4,
                    batch_size: int = 4,
                    validate: bool = True) -> Config:
    """Make a demo config test-sized, in place; returns it.  With
    ``validate=False`` training does not validate (no val_* settings)."""
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    # mmengine keeps one visualizer per name and process: a new name gives
    # each Runner of a test session its own vis_data directory.
    cfg.visualizer.name = f'visualizer_{work_dir}'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
        loader.dataset.gen_cfg = copy.deepcopy(TINY_GEN_CFG)
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'RandomCrop':
            step['crop_size'] = TINY_CROP
        if step['type'] in ('RandomResize', 'Resize'):
            step['scale'] = (48, 48)
    for step in cfg.val_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (48, 48)
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.model.data_preprocessor.size = TINY_CROP
    backbone = cfg.model.backbone
    backbone.stem_channels = backbone.base_channels = 8
    # ResNet-18 blocks do not expand: the last stage has base * 2^(n-1)
    cfg.model.decode_head.in_channels = 8 * 2**(backbone.num_stages - 1)
    cfg.model.decode_head.channels = 16
    # No dropout: tests compare single-iteration losses (resume tests that
    # exercise RandomStateHook switch it back on).
    cfg.model.decode_head.dropout_ratio = 0
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    if not validate:
        # mmengine validates at the end of training, whatever the interval
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    for scheduler in cfg.param_scheduler:
        scheduler['end'] = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.checkpoint.save_best = None
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    return cfg


@pytest.fixture(scope='session')
def demo_data_root(tmp_path_factory):
    """A tiny demo_shapes data set, generated once per test session."""
    from mmseg_fnm.datasets.synthetic import prepare_demo_dataset
    root = str(tmp_path_factory.mktemp('demo_shapes'))
    prepare_demo_dataset(root, **TINY_GEN_CFG)
    return root


@pytest.fixture
def demo_cfg(tmp_path, demo_data_root):
    """``demo_cfg('fnm', max_iters=4)``: a test-sized demo config
    (``'textures_fnm'``: a demo_textures one; pass its ``data_root``)."""

    def make(name: str = 'basic',
             work_dir: str = None,
             data_root: str = None,
             **kwargs) -> Config:
        return shrink_demo_cfg(
            load_demo_cfg(name), work_dir or str(tmp_path / name),
            data_root or demo_data_root, **kwargs)

    return make


@pytest.fixture
def one_thread():
    """Torch on one thread (multi-process tests share 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def trained_demo(tmp_path_factory):
    """A demo model trained clean once per session: ``(config, checkpoint)``.

    Test-sized where it does not matter (16 images of 64x64, half width,
    AdamW for 150 iterations) and full-sized where it does (64x64 inputs,
    so that the output-stride-8 network sees objects).  Validation and
    test run on the 16 training images: the attack tests need a model
    whose predictions are right often enough to be attacked, not one that
    generalises.
    """
    from mmengine.runner import Runner

    from mmseg_fnm.datasets.synthetic import prepare_demo_dataset
    gen_cfg = dict(TINY_GEN_CFG, image_size=64)
    data_root = str(tmp_path_factory.mktemp('demo_shapes_64'))
    prepare_demo_dataset(data_root, **gen_cfg)
    work_dir = str(tmp_path_factory.mktemp('trained_demo'))
    cfg = load_demo_cfg('basic')
    shrink_demo_cfg(cfg, work_dir, data_root, max_iters=150, batch_size=8)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.gen_cfg = dict(gen_cfg)
        cfg[loader].dataset.ann_file = 'splits/train.txt'
        cfg[loader].dataset.data_prefix = dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train')
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'RandomCrop':
            step['crop_size'] = (64, 64)
        if step['type'] == 'RandomResize':
            step['scale'] = (64, 64)
    for loader in ('val_dataloader', 'test_dataloader'):
        for step in cfg[loader].dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (64, 64)
    cfg.model.data_preprocessor.size = (64, 64)
    backbone = cfg.model.backbone
    backbone.stem_channels = backbone.base_channels = 16
    cfg.model.decode_head.in_channels = 16 * 2**(backbone.num_stages - 1)
    cfg.optim_wrapper.optimizer = dict(
        type='AdamW', lr=0.002, weight_decay=1e-4)
    Runner.from_cfg(copy.deepcopy(cfg)).train()
    return cfg, osp.join(work_dir, 'iter_150.pth')


@pytest.fixture(scope='session')
def untrained_demo(tmp_path_factory, demo_data_root):
    """The test-sized basic demo config as a file and a checkpoint of its
    seeded initial weights: ``(config file, checkpoint)``.

    For tests that need attacks to change predictions, not a good model:
    an untrained model's predictions vary from pixel to pixel, so every
    attack setting changes some of them, and no training is needed.  Like
    a Runner's, the checkpoint carries the data set's meta.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    import mmseg_fnm  # noqa: F401 (registers DemoShapesDataset)
    root = tmp_path_factory.mktemp('untrained_demo')
    cfg = load_demo_cfg('basic')
    shrink_demo_cfg(cfg, str(root / 'work'), demo_data_root)
    cfg_file = str(root / 'demo.py')
    cfg.dump(cfg_file)
    init_default_scope('mmseg')
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
    # what a Runner writes into its checkpoints' meta
    dataset_meta = DATASETS.build(cfg.train_dataloader.dataset).metainfo
    checkpoint = str(root / 'init.pth')
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dataset_meta)), checkpoint)
    return cfg_file, checkpoint


RANK_DUMP_HOOK = '''
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):

    def after_train(self, runner):
        model = runner.model
        wrapper = type(model).__name__
        if is_model_wrapper(model):
            model = model.module
        torch.save(
            dict(
                world_size=get_world_size(),
                wrapper=wrapper,
                params={n: p.detach()
                        for n, p in model.named_parameters()},
                buffers={n: b for n, b in model.named_buffers()}),
            osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def dist_train(tmp_path):
    """``dist_train(cfg_file, work_dir)``: 2-process gloo training with
    ``tools/dist_train.sh``; returns each rank's weights.  The config must
    import ``rank_dump_hook`` and use ``DumpRankWeightsHook``."""
    (tmp_path / 'rank_dump_hook.py').write_text(RANK_DUMP_HOOK)

    def run(cfg_file: str, work_dir: str, nproc: int = 2, *args) -> list:
        env = dict(
            os.environ,
            OMP_NUM_THREADS='1',
            MKL_NUM_THREADS='1',
            PYTHON=sys.executable,
            PORT=str(free_port()),
            PYTHONPATH=str(tmp_path))
        result = subprocess.run(
            ['bash', 'tools/dist_train.sh', cfg_file,
             str(nproc), *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return [
            torch.load(osp.join(work_dir, f'rank{r}.pth'), weights_only=True)
            for r in range(nproc)
        ]

    return run

"""A tiny segmentation task for tests: real files, real mmseg pipeline.

:func:`write_tiny_seg_dataset` writes a few small random images and label
maps in mmseg's ``img_dir/{split}`` / ``ann_dir/{split}`` layout, and
:func:`write_tiny_seg_config` writes a config file (inheriting
``configs/_base_/default_runtime.py``) that trains mmseg's
``EncoderDecoder`` with a slim dilated ResNet-18 on them in well under a
second per iteration on one CPU thread.
"""
import os.path as osp
from typing import Optional

import mmcv
import mmengine
import numpy as np
from mmengine.config import Config

CLASSES = ('background', 'stuff', 'thing')
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0]]

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_RUNTIME = osp.join(_REPO_ROOT, 'configs', '_base_',
                           'default_runtime.py')


def write_tiny_seg_dataset(data_root: str,
                           num_train: int = 8,
                           num_test: int = 2,
                           size: int = 32,
                           seed: int = 0) -> str:
    """Write random BGR images and label maps (255 = ignore) as PNGs.

    Args:
        data_root (str): Directory to write into.
        num_train (int): Images in the ``train`` split. Defaults to 8.
        num_test (int): Images in the ``test`` split. Defaults to 2.
        size (int): Height and width of the images. Defaults to 32.
        seed (int): Seed of the random content. Defaults to 0.

    Returns:
        str: ``data_root``.
    """
    rng = np.random.default_rng(seed)
    for split, num in (('train', num_train), ('test', num_test)):
        for i in range(num):
            label = rng.integers(0, len(CLASSES), (size, size), dtype=np.uint8)
            label[rng.random((size, size)) < 0.05] = 255
            # Class-dependent colours, so that there is something to learn.
            image = np.asarray(
                PALETTE, dtype=np.float64)[np.minimum(label,
                                                      len(CLASSES) - 1)]
            image += rng.normal(0, 20, image.shape)
            image = np.clip(image, 0, 255).astype(np.uint8)
            mmcv.imwrite(image,
                         osp.join(data_root, 'img_dir', split, f'{i}.png'))
            mmcv.imwrite(label,
                         osp.join(data_root, 'ann_dir', split, f'{i}.png'))
    return data_root


def write_tiny_seg_config(filename: str,
                          data_root: str,
                          work_dir: str,
                          max_iters: int = 4,
                          checkpoint_interval: Optional[int] = None,
                          batch_size: int = 2,
                          seed: int = 0,
                          size: int = 32,
                          val_interval: Optional[int] = None,
                          base: Optional[str] = DEFAULT_RUNTIME,
                          **extra) -> str:
    """Write the config of a tiny EncoderDecoder on the tiny dataset.

    Deterministic given ``seed`` (no dropout, no random augmentation,
    ``num_workers=0``), so that runs can be compared weight by weight.

    Args:
        filename (str): Path of the ``.py`` config to write.
        data_root (str): Directory written by :func:`write_tiny_seg_dataset`.
        work_dir (str): The Runner's work directory.
        max_iters (int): Training iterations. Defaults to 4.
        checkpoint_interval (int, optional): Iterations between checkpoints.
            Defaults to ``max_iters``.
        batch_size (int): Batch size per process. Defaults to 2.
        seed (int): Random seed. Defaults to 0.
        size (int): Image size the batches are padded to. Defaults to 32.
        val_interval (int, optional): Validate (mIoU on the test split)
            every ``val_interval`` iterations. Defaults to None (never).
        base (str, optional): Config to inherit. Defaults to the project's
            ``configs/_base_/default_runtime.py``; None inherits nothing.
        **extra: More config keys. Top-level keys replace the defaults,
            dotted keys (``'train_cfg.val_interval'``) change single values.

    Returns:
        str: ``filename``.
    """
    norm_cfg = dict(type='BN', requires_grad=True)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]

    def dataset(split):
        return dict(
            type='BaseSegDataset',
            data_root=data_root,
            data_prefix=dict(
                img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
            img_suffix='.png',
            seg_map_suffix='.png',
            metainfo=dict(classes=CLASSES, palette=PALETTE),
            pipeline=pipeline)

    test_dataloader = dict(
        batch_size=1,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset('test'))
    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    if val_interval:
        val = dict(
            val_dataloader=test_dataloader,
            val_evaluator=evaluator,
            val_cfg=dict(type='ValLoop'))
    else:
        val = dict(val_cfg=None)

    cfg = dict(
        default_scope='mmseg',
        work_dir=work_dir,
        randomness=dict(seed=seed),
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                pad_val=0,
                seg_pad_val=255,
                size=(size, size)),
            backbone=dict(
                type='ResNet',
                depth=18,
                stem_channels=8,
                base_channels=4,
                out_indices=(3, ),
                strides=(1, 2, 1, 1),
                dilations=(1, 1, 2, 4),
                contract_dilation=True,
                norm_cfg=norm_cfg),
            decode_head=dict(
                type='FCNHead',
                in_channels=32,
                channels=8,
                num_convs=1,
                concat_input=False,
                dropout_ratio=0.0,
                num_classes=len(CLASSES),
                norm_cfg=norm_cfg,
                align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
            train_cfg=dict(),
            test_cfg=dict(mode='whole')),
        train_dataloader=dict(
            batch_size=batch_size,
            num_workers=0,
            persistent_workers=False,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dataset('train')),
        test_dataloader=test_dataloader,
        test_evaluator=evaluator,
        train_cfg=dict(
            type='IterBasedTrainLoop',
            max_iters=max_iters,
            val_interval=val_interval or max_iters),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(
                type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)),
        param_scheduler=[
            dict(
                type='PolyLR',
                eta_min=1e-4,
                power=0.9,
                begin=0,
                end=100,
                by_epoch=False)
        ],
        default_hooks=dict(
            logger=dict(
                type='LoggerHook', interval=1, log_metric_by_epoch=False),
            checkpoint=dict(
                type='CheckpointHook',
                by_epoch=False,
                interval=checkpoint_interval or max_iters)),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
            dist_cfg=dict(backend='gloo')),
        **val)
    header = ''
    if base is not None:
        header = f'_base_ = [{base!r}]\n'
        # Without a fixed name, each Runner gets a visualizer of its own
        # (several Runners in one test process).
        cfg['visualizer'] = dict(
            _delete_=True,
            type='SegLocalVisualizer',
            vis_backends=[dict(type='LocalVisBackend')])
    cfg = Config(cfg)
    for key, value in extra.items():
        if '.' in key:
            cfg.merge_from_dict({key: value})
        else:
            cfg[key] = value
    mmengine.mkdir_or_exist(osp.dirname(osp.abspath(filename)))
    with open(filename, 'w') as f:
        f.write(header + cfg.pretty_text)
    return filename

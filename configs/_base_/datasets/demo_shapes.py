# demo_shapes: synthetic shapes; colour separates objects from background,
# only shape separates the object classes.
# Built under data_root on first use (DemoShapesDataset(auto_generate=True));
# or beforehand: python -m mmseg_fnm.datasets.synthetic --root data/demo_shapes
dataset_type = 'DemoShapesDataset'
data_root = 'data/demo_shapes'
image_size = 64
# one dict for all splits: the data set is rebuilt when it changes
gen_cfg = dict(num_train=1000, num_val=100, image_size=image_size, seed=0)
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapShape'),
    dict(
        type='RandomResize',
        scale=(image_size, image_size),
        # mild: zooming in cuts shapes, and a cut shape is ambiguous
        ratio_range=(0.8, 1.25),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    # after Resize: the metric compares with the label at original size
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapShape'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        gen_cfg=gen_cfg,
        ann_file='splits/train.txt',
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    # all images have one size, so batches need no padding
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        gen_cfg=gen_cfg,
        ann_file='splits/val.txt',
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

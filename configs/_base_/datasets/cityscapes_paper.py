# Cityscapes with the paper's augmentation (Sec. 4.1), which follows
# PSPNet's reference training code: random scale 0.5-2, rotation
# -10..10 degrees, Gaussian blur, horizontal flip, 712x712 crops.
# No PhotoMetricDistortion (the paper does not use it).
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (712, 712)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # scale = the full 2048x1024 image, so the ratio is relative to it.
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # prob 0.5 as PSPNet's RandRotate; borders get label 255 (ignored).
    dict(type='RandomRotate', prob=0.5, degree=10, pad_val=0, seg_pad_val=255),
    dict(type='RandomGaussianBlur', prob=0.5, kernel_size=5),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    # Flipping after the crop is equivalent and cheaper.
    dict(type='RandomFlip', prob=0.5),
    # Crops smaller than crop_size (scale < 0.7) are padded by the data
    # preprocessor (size=crop_size), which records the padding so that
    # attacks leave it alone; hence no Pad transform here.
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    # add loading annotation after ``Resize`` because ground truth
    # does not need to do resize data transform
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

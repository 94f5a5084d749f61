# PASCAL VOC 2012 + SBD ("aug", 10582 training images) with the paper's
# augmentation (Sec. 4.1), which follows PSPNet's reference training code:
# random scale 0.5-2, rotation -10..10 degrees, Gaussian blur, horizontal
# flip, 472x472 crops. No PhotoMetricDistortion (the paper does not use
# it). Set up the data as mmseg documents (tools/dataset_converters/
# voc_aug.py writes SegmentationClassAug and ImageSets/Segmentation/aug.txt).
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (472, 472)
# VOC images are at most 500 pixels long; scale the long side to 512
# (PSPNet's VOC base size) times a random 0.5-2.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(512, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # prob 0.5 as PSPNet's RandRotate; borders get label 255 (ignored).
    dict(type='RandomRotate', prob=0.5, degree=10, pad_val=0, seg_pad_val=255),
    dict(type='RandomGaussianBlur', prob=0.5, kernel_size=5),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    # Flipping after the crop is equivalent and cheaper.
    dict(type='RandomFlip', prob=0.5),
    # Crops smaller than crop_size are padded by the data preprocessor
    # (size=crop_size), which records the padding so that attacks leave it
    # alone; hence no Pad transform here.
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 512), keep_ratio=True),
    # add loading annotation after ``Resize`` because ground truth
    # does not need to do resize data transform
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
dataset_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# PSPNet on a slim dilated ResNet-18 (output stride 8) for CPU demos:
# half width and the first three stages only (74 MFLOPs for a 64x64 input,
# 3.4x fewer than four half-width stages; full ResNet-18 PSPNet: ~1.5
# GFLOPs).
# BN, not SyncBN: SyncBN raises on CPU tensors.  No auxiliary head.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet statistics on the 0-255 scale
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=32,
        base_channels=32,
        num_stages=3,
        out_indices=(0, 1, 2),
        dilations=(1, 1, 2),
        strides=(1, 2, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='PSPHead',
        in_channels=128,
        in_index=2,
        channels=64,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=6,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

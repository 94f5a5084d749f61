# PSPNet on a pre-activation ResNet-50 (ResNet v2), output stride 8, as in
# the paper (Sec. 4.1): PSPNet50 with ResNet50v2, no auxiliary head.
norm_cfg = dict(type='SyncBN', requires_grad=True)
# timm's resnetv2_50 ImageNet weights were trained on inputs scaled to
# [-1, 1] (mean = std = 0.5 * 255, RGB); Keras' ResNet50V2 uses the same.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='PreActResNet',
        depth=50,
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        norm_eval=False,
        # timm resnetv2_50.a1h_in1k (ImageNet-1k); loaded with
        # weights_only (no pickled code). A local .pth/.safetensors path
        # works too.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/resnetv2_50.a1h_in1k/'
            'resolve/main/model.safetensors')),
    decode_head=dict(
        type='PSPHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        # The paper limits the loss to labelled pixels: average over them.
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            avg_non_ignore=True)),
    # No auxiliary head (the paper drops PSPNet's auxiliary loss).
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# The paper's Basic Model on Cityscapes: PSPNet, pre-activation ResNet-50,
# 712x712 crops, total batch 16 = 8 GPUs x 2 images, no adversarial
# examples. The *_fgsm/_rfgsm/_bim3/_fnm configs differ only in train_cfg.
_base_ = [
    '../_base_/models/pspnet_preact_r50.py',
    '../_base_/datasets/cityscapes_paper.py', '../_base_/default_runtime.py',
    '../_base_/schedules/paper_80k.py'
]
crop_size = (712, 712)
data_preprocessor = dict(size=crop_size)
# Whole-image inference on the 1024x2048 images (cheaper than sliding
# windows, which matters for the gradient-based robustness evaluation).
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='whole'))
# Checkpoint at every validation.
default_hooks = dict(checkpoint=dict(interval=8000))

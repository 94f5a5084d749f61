# The paper's Basic Model on PASCAL VOC 2012 aug: PSPNet, pre-activation
# ResNet-50, 472x472 crops, total batch 16 = 8 GPUs x 2 images, no
# adversarial examples. The *_fgsm/_rfgsm/_bim3/_fnm configs differ only in
# train_cfg.
_base_ = [
    '../_base_/models/pspnet_preact_r50.py',
    '../_base_/datasets/voc_aug_paper.py', '../_base_/default_runtime.py',
    '../_base_/schedules/paper_40k.py'
]
crop_size = (472, 472)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=21),
    test_cfg=dict(mode='whole'))
# Checkpoint at every validation.
default_hooks = dict(checkpoint=dict(interval=4000))

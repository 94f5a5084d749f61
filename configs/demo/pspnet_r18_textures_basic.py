# Clean (non-adversarial) training of PSPNet-R18-slim on demo_textures.
# CPU: python tools/train.py configs/demo/pspnet_r18_textures_basic.py
_base_ = [
    '../_base_/models/pspnet_r18_demo.py',
    '../_base_/datasets/demo_textures.py', '../_base_/default_runtime.py',
    '../_base_/schedules/demo_schedule.py'
]
crop_size = (64, 64)  # as in the dataset base: pads batches to the crop
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=9))  # background + 8 textures
# intervals for the 2500-iteration demo schedule
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=1250, max_keep_ckpts=2))
randomness = dict(seed=0)

# Clean (non-adversarial) training of PSPNet-R18-slim on demo_shapes.
# CPU: python tools/train.py configs/demo/pspnet_r18_demo_basic.py
# (about 3 minutes on 2 cores; val mIoU about 62%).
_base_ = [
    '../_base_/models/pspnet_r18_demo.py',
    '../_base_/datasets/demo_shapes.py', '../_base_/default_runtime.py',
    '../_base_/schedules/demo_schedule.py'
]
crop_size = (64, 64)  # as in the dataset base: pads batches to the crop
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
# intervals for the 2500-iteration demo schedule
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=1250, max_keep_ckpts=2))
randomness = dict(seed=0)

# Iteration-based schedule of the CPU demo: 2500 iterations of batch 8 on
# 64x64 crops, about 3 minutes of clean training on 2 cores (README, "Two
# commands"; 4x longer gives about 12 points more mIoU, see
# docs/reproduction.md).  The network is trained from scratch,
# hence a higher learning rate than the paper's 0.01 for ImageNet-initialised
# backbones.  Hooks are set by _base_/default_runtime.py (a sibling base may
# not redefine them); the demo leaf configs adjust their intervals.
max_iters = 2500
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

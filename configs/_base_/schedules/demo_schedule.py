# Short iteration-based schedule for the CPU demo.  Hooks are set by
# _base_/default_runtime.py (a sibling base may not redefine them); the
# demo leaf configs adjust their intervals.
max_iters = 800
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4)
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
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

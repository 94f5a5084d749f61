# The paper's optimiser (Sec. 4.1, following PSPNet): SGD, momentum 0.9,
# weight decay 1e-4, base lr 0.01 with poly decay (power 0.9), total batch
# 16 (8 GPUs x 2 images, see the data set configs). The paper gives no
# iteration count; 80k is mmseg's usual schedule for Cityscapes. eta_min as in
# mmseg's schedules (PSPNet's poly decays to 0).
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# With fewer GPUs or images per GPU, scale the lr linearly by enabling this
# (--cfg-options auto_scale_lr.enable=True); the paper's total batch is 16.
auto_scale_lr = dict(enable=False, base_batch_size=16)
# default_hooks come from ../default_runtime.py (with SafeCheckpointHook);
# the leaf configs set the checkpoint interval.

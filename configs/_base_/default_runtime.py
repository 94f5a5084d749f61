# Runtime shared by mmseg_fnm configs: mmseg's runtime, the plugin, and the
# default hooks of mmseg's iteration-based schedules plus SafeCheckpointHook
# (checkpoints that load with torch.load(weights_only=True)) and
# RandomStateHook (--resume goes on bit-identically).
#
# The hooks live here, not in the schedules: mmengine refuses a key defined
# by two sibling bases, so a leaf inheriting this file must not also inherit
# a schedule that defines `default_hooks` (mmseg's schedules do).  Change
# single hooks in a leaf, e.g. `default_hooks = dict(checkpoint=dict(
# interval=500))`; dict keys merge, unlike `custom_hooks` lists.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['mmseg_fnm'], allow_failed_imports=False)
default_scope = 'mmseg'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    safe_checkpoint=dict(type='SafeCheckpointHook'),
    random_state=dict(type='RandomStateHook'))

# Reuse: mmseg's own SegFormer-B0 Cityscapes config, unchanged, trained with
# the Fast Newton Method; only the plugin import and the loop are added.
_base_ = [
    'mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'
]
custom_imports = dict(imports=['mmseg_fnm'], allow_failed_imports=False)
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='FastNewton'),
    adv_prob=0.5)
# Checkpoints that load with torch.load(weights_only=True).
default_hooks = dict(safe_checkpoint=dict(type='SafeCheckpointHook'))

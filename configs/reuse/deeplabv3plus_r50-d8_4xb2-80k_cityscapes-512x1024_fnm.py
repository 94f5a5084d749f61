# Reuse: mmseg's own DeepLabV3+ Cityscapes config, unchanged, trained with
# the Fast Newton Method; only the plugin import and the loop are added.
_base_ = [
    'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
]
custom_imports = dict(imports=['mmseg_fnm'], allow_failed_imports=False)
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='FastNewton'),
    adv_prob=0.5)
# Checkpoints that load with torch.load(weights_only=True).
default_hooks = dict(safe_checkpoint=dict(type='SafeCheckpointHook'))

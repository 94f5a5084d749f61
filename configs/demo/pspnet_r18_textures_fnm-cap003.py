# Fast Newton Method with its radius capped at 0.03 on demo_textures.
_base_ = ['./pspnet_r18_textures_fnm.py']
train_cfg = dict(attack=dict(max_eps=0.03))

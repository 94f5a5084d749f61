# Fast Newton Method on demo_textures, adversarial w.p. 0.5.
_base_ = ['./pspnet_r18_textures_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='FastNewton'),
    adv_prob=0.5)

# BIM Model on demo_textures: alpha 0.01, eps 0.03, N = 3, adversarial w.p. 0.5.
_base_ = ['./pspnet_r18_textures_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='BIM', eps=0.03, alpha=0.01, steps=3),
    adv_prob=0.5)

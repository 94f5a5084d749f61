# BIM Model: BIM with alpha 0.01, eps 0.03, N = 3, adversarial w.p. 0.5.
_base_ = ['./pspnet_preact-r50-d8_8xb2-80k_cityscapes-712x712_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='BIM', eps=0.03, alpha=0.01, steps=3),
    adv_prob=0.5)

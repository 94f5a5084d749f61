# Fast Newton Method: the paper's step size, adversarial w.p. 0.5.
_base_ = ['./pspnet_preact-r50-d8_8xb2-80k_cityscapes-712x712_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='FastNewton'),
    adv_prob=0.5)

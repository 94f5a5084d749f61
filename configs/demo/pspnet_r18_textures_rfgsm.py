# random FGSM Model on demo_textures: eps ~ U(0, 0.03), adversarial w.p. 0.5.
_base_ = ['./pspnet_r18_textures_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='RandomFGSM', eps=0.03),
    adv_prob=0.5)

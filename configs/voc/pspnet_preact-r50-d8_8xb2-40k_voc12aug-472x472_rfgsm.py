# random FGSM Model: FGSM with eps ~ U(0, 0.03), adversarial w.p. 0.5.
_base_ = ['./pspnet_preact-r50-d8_8xb2-40k_voc12aug-472x472_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='RandomFGSM', eps=0.03),
    adv_prob=0.5)

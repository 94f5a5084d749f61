# FGSM Model: half of the training batches adversarial, FGSM at eps 0.03.
_base_ = ['./pspnet_preact-r50-d8_8xb2-80k_cityscapes-712x712_basic.py']
train_cfg = dict(
    type='AdversarialIterBasedTrainLoop',
    attack=dict(type='FGSM', eps=0.03),
    adv_prob=0.5)

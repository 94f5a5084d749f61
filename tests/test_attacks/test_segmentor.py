"""mmseg-level attacks: pixel space, objectives, padding, side effects."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from mmseg_fnm.attacks import APGD, BIM, FGSM, FastNewton, SegmentorAttacker
from mmseg_fnm.attacks.base import cross_entropy_sum
from mmseg_fnm.attacks.segmentor import decode_loss, norm_layers_frozen

register_all_modules(init_default_scope=True)
NUM_CLASSES = 4
NORM = dict(type='BN', requires_grad=True)


def backbone(with_cp=False):
    return dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=8,
        base_channels=8,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=NORM,
        contract_dilation=True,
        with_cp=with_cp)


def segmentor_cfg(test_cfg=dict(mode='whole'), with_cp=False, auxiliary=True):
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size_divisor=16),
        backbone=backbone(with_cp),
        decode_head=dict(
            type='PSPHead',
            in_channels=64,
            in_index=3,
            channels=16,
            pool_scales=(1, 2, 3),
            dropout_ratio=0.1,
            num_classes=NUM_CLASSES,
            norm_cfg=NORM,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=test_cfg)
    if auxiliary:
        cfg['auxiliary_head'] = dict(
            type='FCNHead',
            in_channels=32,
            in_index=2,
            channels=8,
            num_convs=1,
            num_classes=NUM_CLASSES,
            norm_cfg=NORM,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
    return cfg


def build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
    # Non-trivial running statistics, so that norm modes matter.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def make_batch(shapes=((40, 48), (48, 32)), seed=0, flip=False):
    """A batch exactly as the dataloader yields it (PackSegInputs)."""
    rng = np.random.default_rng(seed)
    pack = PackSegInputs()
    inputs, samples = [], []
    for h, w in shapes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        seg = rng.integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)
        seg[:3] = 255
        packed = pack(
            dict(
                img=img,
                gt_seg_map=seg,
                img_path=f'img_{h}x{w}.png',
                seg_map_path=f'seg_{h}x{w}.png',
                ori_shape=(h, w),
                img_shape=(h, w),
                flip=flip,
                flip_direction='horizontal' if flip else None,
                reduce_zero_label=False))
        inputs.append(packed['inputs'])
        samples.append(packed['data_samples'])
    return dict(inputs=inputs, data_samples=samples)


def label_with_model(model, batch):
    """Replace labels by the model's own prediction (ignore rows kept), so
    the mean margin is positive as for a trained model."""
    training = model.training
    model.eval()
    with torch.no_grad():
        for i, sample in enumerate(batch['data_samples']):
            out = model.test_step(
                dict(
                    inputs=[batch['inputs'][i]],
                    data_samples=[sample.clone()]))[0]
            label = sample.gt_sem_seg.data
            pred = out.pred_sem_seg.data.to(label.dtype)
            sample.gt_sem_seg.data = torch.where(label == 255, label, pred)
    model.train(training)
    return batch


def state_snapshot(model):
    return dict(
        grads={
            n: None if p.grad is None else p.grad.clone()
            for n, p in model.named_parameters()
        },
        requires_grad={
            n: p.requires_grad
            for n, p in model.named_parameters()
        },
        buffers={
            n: b.clone()
            for n, b in model.named_buffers()
        },
        modes={
            n: m.training
            for n, m in model.named_modules()
        })


def assert_same_state(before, after):
    assert before['requires_grad'] == after['requires_grad']
    assert before['modes'] == after['modes']
    for name, grad in before['grads'].items():
        other = after['grads'][name]
        assert (grad is None) == (other is None), name
        if grad is not None:
            assert torch.equal(grad, other), name
    for name, buf in before['buffers'].items():
        assert torch.equal(buf, after['buffers'][name]), name


def test_train_objective_is_the_models_decode_loss():
    model = build(segmentor_cfg())
    model.eval()  # no dropout; BN on running statistics in both passes
    batch = make_batch()
    problem = SegmentorAttacker().problem(model, batch, 'loss')
    # padded labels: padding is ignore, the image's own labels are intact
    assert problem.labels.shape == (2, 48, 48)
    assert (problem.labels[0, 40:] == 255).all()
    assert (problem.labels[1, :, 32:] == 255).all()
    with torch.no_grad():
        logits = problem.forward(problem.images)
        ce = cross_entropy_sum(logits, problem.labels, 255).sum()
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        losses = model.loss(data['inputs'], data['data_samples'])
    # mmseg's CrossEntropyLoss (avg_non_ignore=False) divides by all pixels
    torch.testing.assert_close(ce / problem.labels.numel(),
                               losses['decode.loss_ce'])


@pytest.mark.parametrize(
    'test_cfg', [
        dict(mode='whole'),
        dict(mode='slide', crop_size=(24, 24), stride=(16, 16))
    ],
    ids=['whole', 'slide'])
@pytest.mark.parametrize('flip', [False, True])
def test_predict_objective_is_what_the_evaluation_scores(test_cfg, flip):
    model = build(segmentor_cfg(test_cfg))
    model.eval()
    batch = make_batch(shapes=((40, 48), (40, 48)), flip=flip)
    problem = SegmentorAttacker().problem(model, batch, 'predict')
    with torch.no_grad():
        logits = problem.forward(problem.images)
        outputs = model.test_step(copy.deepcopy(batch))
    expected = torch.stack([o.pred_sem_seg.data[0] for o in outputs])
    assert torch.equal(logits.argmax(1), expected)
    labels = torch.stack([s.gt_sem_seg.data[0] for s in batch['data_samples']])
    assert torch.equal(problem.labels, labels.long())


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_gradients_reach_the_input_through_inference(mode):
    test_cfg = dict(mode=mode, crop_size=(24, 24), stride=(16, 16))
    model = build(segmentor_cfg(test_cfg))
    model.eval()
    batch = make_batch(shapes=((40, 48), (40, 48)))
    inputs, eps = SegmentorAttacker().attack(model, FGSM(0.02), batch,
                                             'predict')
    assert (eps == 0.02).all()
    for adv, clean in zip(inputs, batch['inputs']):
        delta = adv - clean.float()
        assert delta.abs().max() == pytest.approx(0.02 * 255, rel=1e-4)


@pytest.mark.parametrize('norm_mode', ['eval', 'train'])
@pytest.mark.parametrize('objective', ['loss', 'predict'])
@pytest.mark.parametrize(
    'attack', [FGSM(0.03), BIM(0.03, 0.01, 3),
               FastNewton()], ids=repr)
def test_attacks_leave_no_trace(norm_mode, objective, attack):
    model = build(segmentor_cfg())
    model.train(objective == 'loss')
    # existing gradients must survive untouched
    for p in list(model.parameters())[::3]:
        p.grad = torch.randn_like(p)
    list(model.parameters())[1].requires_grad_(False)  # frozen stays frozen
    batch = make_batch(shapes=((40, 48), (40, 48)))
    batch_before = copy.deepcopy(batch)
    before = state_snapshot(model)
    SegmentorAttacker(norm_mode=norm_mode).attack(model, attack, batch,
                                                  objective)
    assert_same_state(before, state_snapshot(model))
    for clean, kept in zip(batch_before['inputs'], batch['inputs']):
        assert torch.equal(clean, kept)
    for clean, kept in zip(batch_before['data_samples'],
                           batch['data_samples']):
        assert clean.metainfo.keys() == kept.metainfo.keys()
        assert torch.equal(clean.gt_sem_seg.data, kept.gt_sem_seg.data)


def test_norm_mode_decides_the_statistics_the_attack_sees():
    cfg = segmentor_cfg(auxiliary=False)
    cfg['decode_head']['dropout_ratio'] = 0  # dropout follows model.train()
    model = build(cfg)
    model.train()
    batch = make_batch(shapes=((40, 48), (40, 48)))
    attack = FGSM(0.03)
    eval_out, _ = SegmentorAttacker('eval').attack(model, attack, batch)
    train_out, _ = SegmentorAttacker('train').attack(model, attack, batch)
    # same model in eval mode gives the 'eval' result
    model.eval()
    frozen_out, _ = SegmentorAttacker('train').attack(model, attack, batch)
    assert all(torch.equal(a, b) for a, b in zip(eval_out, frozen_out))
    assert not all(torch.equal(a, b) for a, b in zip(eval_out, train_out))
    with pytest.raises(ValueError, match='norm_mode'):
        SegmentorAttacker('frozen')


@pytest.mark.parametrize(
    'attack', [FGSM(0.03), BIM(0.03, 0.01, 3),
               FastNewton()], ids=repr)
def test_padding_is_never_perturbed_and_images_stay_float(attack):
    model = build(segmentor_cfg())
    batch = label_with_model(model, make_batch(shapes=((40, 48), (40, 48))))
    inputs, eps = SegmentorAttacker().attack(model, attack, batch)
    assert len(inputs) == 2
    for adv, clean, radius in zip(inputs, batch['inputs'], eps):
        assert adv.shape == clean.shape  # cropped back: no padding leaks
        assert adv.dtype == torch.float32
        delta = (adv - clean.float()) / 255
        assert delta.abs().max() <= radius + 1e-5
        assert adv.min() >= 0 and adv.max() <= 255 + 1e-3
    assert (eps > 0).all()
    # sub-grey-level steps survive (no uint8 rounding)
    frac = (inputs[0] - inputs[0].round()).abs()
    assert frac.max() > 0.01


def test_with_cp_backbone_gives_the_same_attack():
    cfgs = [segmentor_cfg(with_cp=False), segmentor_cfg(with_cp=True)]
    for cfg in cfgs:
        cfg['decode_head']['dropout_ratio'] = 0  # deterministic in train()
    plain, checkpointed = map(build, cfgs)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model.train()
        for p in model.parameters():
            p.grad = None
    batch = label_with_model(plain, make_batch(shapes=((40, 48), (40, 48))))
    results = [
        SegmentorAttacker().attack(m, FastNewton(), batch)
        for m in (plain, checkpointed)
    ]
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][1], results[1][1])
    assert (results[1][1] > 0).all()  # the gradient did reach the input
    assert all(p.grad is None for p in checkpointed.parameters())


def test_cascade_encoder_decoder():
    cfg = dict(
        type='CascadeEncoderDecoder',
        num_stages=2,
        data_preprocessor=segmentor_cfg()['data_preprocessor'],
        backbone=backbone(),
        decode_head=[
            dict(
                type='FCNHead',
                in_channels=64,
                in_index=3,
                channels=8,
                num_convs=1,
                num_classes=NUM_CLASSES,
                norm_cfg=NORM,
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
            dict(
                type='OCRHead',
                in_channels=64,
                in_index=3,
                channels=8,
                ocr_channels=8,
                num_classes=NUM_CLASSES,
                norm_cfg=NORM,
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))
        ],
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    model = build(cfg)
    model.eval()
    batch = make_batch()
    problem = SegmentorAttacker().problem(model, batch, 'loss')
    with torch.no_grad():
        ce = cross_entropy_sum(
            problem.forward(problem.images), problem.labels, 255).sum()
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        losses = model.loss(data['inputs'], data['data_samples'])
    torch.testing.assert_close(ce / problem.labels.numel(),
                               losses['decode_1.loss_ce'])
    inputs, eps = SegmentorAttacker().attack(model, FGSM(0.01), batch)
    assert (eps == 0.01).all()


def test_sweep_returns_the_clean_inputs_at_radius_zero():
    model = build(segmentor_cfg())
    model.eval()
    batch = make_batch(shapes=((40, 48), (40, 48)))
    swept = list(SegmentorAttacker().sweep(model, FGSM(), batch,
                                           [0, 0.01, 0.02]))
    assert [eps for eps, _, _ in swept] == [0, 0.01, 0.02]
    assert all(a is b for a, b in zip(swept[0][1], batch['inputs']))
    for eps, inputs, radii in swept[1:]:
        single, _ = SegmentorAttacker().attack(model, FGSM(eps), batch,
                                               'predict')
        for a, b in zip(inputs, single):
            torch.testing.assert_close(a, b)


def test_decode_loss_has_no_side_effects():
    model = build(segmentor_cfg())
    model.train()
    batch = make_batch()
    before = state_snapshot(model)
    loss = decode_loss(model, batch)
    assert np.isfinite(loss) and loss > 0
    assert_same_state(before, state_snapshot(model))
    with norm_layers_frozen(model):
        assert not any(m.training for m in model.modules()
                       if isinstance(m, torch.nn.BatchNorm2d))
    assert_same_state(before, state_snapshot(model))


def test_attacks_under_autocast_keep_float32_maths():
    model = build(segmentor_cfg())
    model.eval()
    batch = label_with_model(model, make_batch(shapes=((40, 48), (40, 48))))
    full = SegmentorAttacker().attack(model, FastNewton(), batch)
    half = SegmentorAttacker(autocast_dtype=torch.bfloat16).attack(
        model, FastNewton(), batch)
    assert half[1].dtype == torch.float32
    assert all(a.dtype == torch.float32 for a in half[0])
    # bfloat16 logits, float32 radius: close to the full-precision one
    torch.testing.assert_close(half[1], full[1], rtol=0.1, atol=1e-4)
    assert (half[1] > 0).all()


def test_sub_batch_forward_equals_the_rows_of_the_full_forward():
    # Early-stopping attacks (APGD, SEA) go on with the images not yet
    # solved, each with its own crop, metas and label padding.
    model = build(segmentor_cfg())
    model.eval()
    batch = make_batch(shapes=((40, 48), ) * 3, seed=3)
    problem = SegmentorAttacker().problem(model, batch, 'predict')
    index = torch.tensor([2, 0])
    with torch.no_grad():
        full = problem.forward(problem.images)
        part = problem.forward.subset(index)(problem.images[index])
        single = problem.forward.subset(index).subset(torch.tensor([1]))(
            problem.images[[0]])
    torch.testing.assert_close(part, full[index])
    torch.testing.assert_close(single, full[[0]])


def test_early_stop_through_mmseg_changes_nothing_but_the_budget():
    model = build(segmentor_cfg())
    model.eval()
    batch = label_with_model(model, make_batch(shapes=((40, 48), (40, 48))))
    # image 0: every labelled pixel wrong from the start, so early stop
    # drops it and attacks image 1 alone
    sample = batch['data_samples'][0]
    seg = sample.gt_sem_seg.data
    sample.gt_sem_seg.data = torch.where(seg == 255, seg,
                                         (seg + 1) % NUM_CLASSES)
    attacker = SegmentorAttacker()
    [(_, fast, fast_out)] = attacker.sweep(model, APGD(0.02, iters=4), batch,
                                           [0.02])
    [(_, slow, slow_out)] = attacker.sweep(
        model, APGD(0.02, iters=4, early_stop=False), batch, [0.02])
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)
    # image 0: only the pass that found it solved
    assert fast_out.backwards.tolist() == [1, 4]
    assert fast_out.forwards.tolist() == [1, 5]
    assert slow_out.backwards.tolist() == [4, 4]

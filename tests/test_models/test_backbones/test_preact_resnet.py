import json
import pickle
import struct

import pytest
import torch
import torch.nn.functional as F
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from mmseg.registry import MODELS

import mmseg_fnm  # noqa: F401  (registers PreActResNet)
from mmseg_fnm.models import PreActResNet, convert_timm_resnetv2

torch.set_num_threads(1)

# timm's resnetv2_{depth}: (blocks per stage, basic block?)
TIMM_ARCH = {
    18: ((2, 2, 2, 2), True),
    34: ((3, 4, 6, 3), True),
    50: ((3, 4, 6, 3), False),
    101: ((3, 4, 23, 3), False),
}
D8 = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))


def timm_state_dict(depth, seed=0):
    """A random state dict with timm ``resnetv2_{depth}``'s keys/shapes.

    Written from timm's ``ResNetV2`` source (``stem.conv``, stages of
    ``PreActBasic``/``PreActBottleneck`` with ``downsample.conv``, final
    ``norm`` and a 1x1-conv classifier ``head.fc``), independently of
    :class:`PreActResNet`.
    """
    g = torch.Generator().manual_seed(seed)
    layers, basic = TIMM_ARCH[depth]
    channels = (64, 128, 256, 512) if basic else (256, 512, 1024, 2048)
    sd = {}

    def conv(name, out_c, in_c, k):
        sd[name + '.weight'] = torch.randn(
            out_c, in_c, k, k, generator=g) * (2. / (in_c * k * k))**0.5

    def bn(name, c):
        sd[name + '.weight'] = torch.rand(c, generator=g) + 0.5
        sd[name + '.bias'] = torch.randn(c, generator=g) * 0.1
        sd[name + '.running_mean'] = torch.randn(c, generator=g) * 0.1
        sd[name + '.running_var'] = torch.rand(c, generator=g) + 0.5
        sd[name + '.num_batches_tracked'] = torch.tensor(1000)

    conv('stem.conv', 64, 3, 7)
    prev = 64
    for i, (n, c) in enumerate(zip(layers, channels)):
        for j in range(n):
            p = f'stages.{i}.blocks.{j}.'
            in_c = prev if j == 0 else c
            bn(p + 'norm1', in_c)
            if basic:
                conv(p + 'conv1', c, in_c, 3)
                bn(p + 'norm2', c)
                conv(p + 'conv2', c, c, 3)
                # timm: projection where stride/channels change
                project = j == 0 and (i > 0 or in_c != c)
            else:
                mid = c // 4
                conv(p + 'conv1', mid, in_c, 1)
                bn(p + 'norm2', mid)
                conv(p + 'conv2', mid, mid, 3)
                bn(p + 'norm3', mid)
                conv(p + 'conv3', c, mid, 1)
                project = j == 0
            if project:
                conv(p + 'downsample.conv', c, in_c, 1)
        prev = c
    bn('norm', prev)
    sd['head.fc.weight'] = torch.randn(1000, prev, 1, 1, generator=g)
    sd['head.fc.bias'] = torch.randn(1000, generator=g)
    return sd


def timm_reference_features(sd, depth, x, strides, dilations):
    """timm's pre-activation forward, written with functional ops.

    Returns ``relu(bn(stage_i output))`` for each stage, with the norm the
    network applies to it (next stage's first ``norm1``, final ``norm``).
    Dilation follows timm's ``ResNetStage``: the first block of a stage
    uses dilation 1 for stage dilation 1 or 2, else 2.
    """
    layers, basic = TIMM_ARCH[depth]

    def bn(t, name):
        return F.relu(
            F.batch_norm(t, sd[name + '.running_mean'],
                         sd[name + '.running_var'], sd[name + '.weight'],
                         sd[name + '.bias'], False, 0., 1e-5))

    x = F.conv2d(x, sd['stem.conv.weight'], stride=2, padding=3)
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    for i, n in enumerate(layers):
        d = dilations[i]
        first_d = 1 if d in (1, 2) else 2
        for j in range(n):
            p = f'stages.{i}.blocks.{j}.'
            s = strides[i] if j == 0 else 1
            fd = first_d if j == 0 else d
            xp = bn(x, p + 'norm1')
            shortcut = x
            if p + 'downsample.conv.weight' in sd:
                shortcut = F.conv2d(
                    xp, sd[p + 'downsample.conv.weight'], stride=s)
            if basic:
                y = F.conv2d(
                    xp,
                    sd[p + 'conv1.weight'],
                    stride=s,
                    padding=fd,
                    dilation=fd)
                y = F.conv2d(
                    bn(y, p + 'norm2'),
                    sd[p + 'conv2.weight'],
                    padding=d,
                    dilation=d)
            else:
                y = F.conv2d(xp, sd[p + 'conv1.weight'])
                y = F.conv2d(
                    bn(y, p + 'norm2'),
                    sd[p + 'conv2.weight'],
                    stride=s,
                    padding=fd,
                    dilation=fd)
                y = F.conv2d(bn(y, p + 'norm3'), sd[p + 'conv3.weight'])
            x = y + shortcut
        out_norm = 'norm' if i == len(layers) - 1 else \
            f'stages.{i + 1}.blocks.0.norm1'
        feats.append(bn(x, out_norm))
    return feats


def save_safetensors(sd, path):
    """Write the safetensors format (8-byte header size, JSON, bytes)."""
    names = {torch.float32: 'F32', torch.int64: 'I64'}
    header, blobs, offset = {'__metadata__': {'format': 'pt'}}, [], 0
    for k, v in sd.items():
        data = v.contiguous().numpy().tobytes()
        header[k] = dict(
            dtype=names[v.dtype],
            shape=list(v.shape),
            data_offsets=[offset, offset + len(data)])
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(raw)) + raw + b''.join(blobs))


def build(depth, **kwargs):
    return MODELS.build(dict(type='PreActResNet', depth=depth, **kwargs))


@pytest.mark.parametrize('depth,kwargs,channels,sizes', [
    (18, {}, (64, 128, 256, 512), (16, 8, 4, 2)),
    (50, D8, (256, 512, 1024, 2048), (16, 8, 8, 8)),
])
def test_output_channels_and_strides(depth, kwargs, channels, sizes):
    model = build(depth, **kwargs)
    assert isinstance(model, PreActResNet)
    assert model.feat_channels == channels
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(channels)
    assert [o.shape[-1] for o in outs] == list(sizes)
    # returned features are pre-activations: outputs of a ReLU
    assert all(o.min() >= 0 for o in outs)


def test_out_indices_subset_and_bad_args():
    model = build(18, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [128, 512]
    with pytest.raises(KeyError, match='depth=42'):
        build(42)
    with pytest.raises(ValueError, match='out_indices'):
        build(18, out_indices=(4, ))
    with pytest.raises(ValueError, match='strides'):
        build(18, strides=(1, 2, 2))
    with pytest.raises(ValueError, match='frozen_stages'):
        build(18, frozen_stages=5)


@pytest.mark.parametrize('depth,fmt,kwargs', [
    (50, 'pth', D8),
    (18, 'safetensors', {}),
])
def test_timm_weights_match_timm_forward(tmp_path, depth, fmt, kwargs):
    """Loaded timm-named weights give timm's forward (d8 too)."""
    sd = timm_state_dict(depth)
    path = tmp_path / f'resnetv2_{depth}.{fmt}'
    if fmt == 'pth':
        torch.save({'state_dict': sd}, path)  # wrapped, as some exports are
    else:
        save_safetensors(sd, path)
    model = build(
        depth,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)),
        **kwargs)
    model.init_weights()
    own = model.state_dict()
    expected = {k for k in sd if not k.startswith('head.')}
    assert set(own) == expected  # no missing, no unexpected keys
    for k in expected:
        assert torch.equal(own[k], sd[k]), k
    x = torch.randn(1, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        outs = model(x)
        ref = timm_reference_features(sd, depth, x,
                                      kwargs.get('strides', (1, 2, 2, 2)),
                                      kwargs.get('dilations', (1, 1, 1, 1)))
    assert len(outs) == 4
    for o, r in zip(outs, ref):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('depth', [34, 101])
def test_timm_key_layout_other_depths(depth):
    converted = convert_timm_resnetv2(timm_state_dict(depth))
    own = build(depth, **D8).state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)


def test_pretrained_prefix_and_errors(tmp_path):
    sd = timm_state_dict(18)
    # a segmentor checkpoint: keys under 'backbone.'
    seg = {'backbone.' + k: v for k, v in sd.items()}
    seg['decode_head.conv_seg.weight'] = torch.zeros(2, 2, 1, 1)
    path = tmp_path / 'seg.pth'
    torch.save({'meta': {}, 'state_dict': seg}, path)
    model = build(
        18,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert torch.equal(model.state_dict()['norm.running_var'],
                       sd['norm.running_var'])

    # depth mismatch: resnetv2_18 weights into a depth-34 model
    path18 = tmp_path / 'r18.pth'
    torch.save(sd, path18)
    model = build(34, init_cfg=dict(type='Pretrained', checkpoint=str(path18)))
    with pytest.raises(KeyError, match='lacks'):
        model.init_weights()
    # a 4-channel stem into a 3-channel model: shapes differ
    path4 = tmp_path / 'r18_4ch.pth'
    torch.save(
        dict(sd, **{'stem.conv.weight': torch.zeros(64, 4, 7, 7)}), path4)
    model = build(18, init_cfg=dict(type='Pretrained', checkpoint=str(path4)))
    with pytest.raises(ValueError, match='shapes differ'):
        model.init_weights()
    # a GroupNorm (BiT) checkpoint has no running statistics
    bit = {
        k: v
        for k, v in sd.items() if 'running' not in k and 'num_batches' not in k
    }
    with pytest.raises(ValueError, match='BiT'):
        convert_timm_resnetv2(bit)
    model = build(
        18,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()


class _Payload:
    """A pickled object that weights_only loading must refuse."""

    def __reduce__(self):
        return (print, ('code ran while loading', ))


def test_pretrained_loading_is_weights_only(tmp_path):
    sd = timm_state_dict(18)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': sd, 'extra': _Payload()}, path)
    model = build(18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(pickle.UnpicklingError):
        model.init_weights()


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_with_cp_matches_plain_forward_and_grads():
    torch.manual_seed(0)
    plain = build(18, **D8)
    ckpt = build(18, with_cp=True, **D8)
    ckpt.load_state_dict(plain.state_dict())
    plain.train()
    ckpt.train()
    x = torch.randn(2, 3, 32, 32)
    results = []
    for model in (plain, ckpt):
        calls = _count_calls(model.stages[1].blocks[1].conv1)
        xi = x.clone().requires_grad_(True)
        outs = model(xi)
        loss = sum((o * (k + 1)).mean() for k, o in enumerate(outs))
        loss.backward()
        results.append(
            (outs, xi.grad, model.stem.conv.weight.grad, len(calls)))
    (o1, g1, w1, n1), (o2, g2, w2, n2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(w1, w2)
    # checkpointing really happened: the block ran again in backward
    assert n1 == 1 and n2 == 2
    # ... and only when the input requires grad
    calls = _count_calls(ckpt.stages[1].blocks[1].conv1)
    ckpt.eval()
    with torch.no_grad():
        ckpt(x)
    assert len(calls) == 1


def _bn_stats(module):
    return [
        m.running_mean.clone() for m in module.modules()
        if isinstance(m, _BatchNorm)
    ]


def test_norm_eval():
    model = build(18, norm_eval=True)
    model.train()
    assert all(not m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    assert model.stem.training  # only the norms are switched
    before = _bn_stats(model)
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(model)))
    # without norm_eval the statistics move
    model = build(18).train()
    before = _bn_stats(model)
    model(torch.randn(2, 3, 32, 32))
    assert not all(torch.equal(a, b) for a, b in zip(before, _bn_stats(model)))


def test_frozen_stages():
    model = build(18, frozen_stages=2)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not b.training for b in m.modules()
                   if isinstance(b, _BatchNorm))
    for m in (model.stages[2], model.stages[3], model.norm):
        assert all(p.requires_grad for p in m.parameters())
        assert m.training
    before = _bn_stats(model.stages[1])
    after_unfrozen = _bn_stats(model.stages[2])
    model(torch.randn(2, 3, 32, 32))
    assert all(
        torch.equal(a, b) for a, b in zip(before, _bn_stats(model.stages[1])))
    assert not all(
        torch.equal(a, b)
        for a, b in zip(after_unfrozen, _bn_stats(model.stages[2])))
    model = build(18, frozen_stages=4).train()
    assert all(not p.requires_grad for p in model.parameters())


def test_pretrained_through_segmentor_init_weights(tmp_path):
    """mmengine's init_weights of a segmentor reaches the backbone's."""
    sd = timm_state_dict(18)
    path = tmp_path / 'resnetv2_18.pth'
    torch.save(sd, path)
    segmentor = MODELS.build(
        dict(
            type='EncoderDecoder',
            backbone=dict(
                type='PreActResNet',
                depth=18,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                **D8),
            decode_head=dict(
                type='PSPHead',
                in_channels=512,
                in_index=3,
                channels=16,
                num_classes=3,
                loss_decode=dict(type='CrossEntropyLoss'))))
    segmentor.init_weights()
    own = segmentor.backbone.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)

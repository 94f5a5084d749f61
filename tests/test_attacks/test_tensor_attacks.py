"""Tensor-level attacks: contracts, edge cases and exactness."""
import numpy as np
import pytest
import torch
from torch import nn

from mmseg_fnm.attacks import (APGD, BIM, FGSM, SEA, FastNewton, RandomFGSM,
                               SegPGD, build_attack)
from mmseg_fnm.attacks.base import cross_entropy_sum, margin_sum

IGNORE = 255


class TinyNet(nn.Module):
    """A small nonlinear fully convolutional net: logits at input size."""

    def __init__(self, num_classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
            nn.Conv2d(8, num_classes, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def make_batch(n=3, size=12, num_classes=4, seed=0, net=None):
    """Random images; labels mostly agree with ``net`` (so that the mean
    margin is positive, as for a trained model), 10% random, 2 rows
    ignored."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen)
    labels = torch.randint(0, num_classes, (n, size, size), generator=gen)
    if net is not None:
        with torch.no_grad():
            predicted = net(images).argmax(1)
        keep = torch.rand(labels.shape, generator=gen) > 0.1
        labels = torch.where(keep, predicted, labels)
    labels[:, :2] = IGNORE  # some ignored pixels in every sample
    return images, labels


ALL_ATTACKS = [
    FGSM(eps=0.03),
    RandomFGSM(eps=0.03),
    BIM(eps=0.03, alpha=0.01, steps=3),
    BIM(eps=0.02, alpha=0.004, steps=10, random_start=True),
    FastNewton(),
    FastNewton(max_eps=0.01),
    SegPGD(eps=0.03, steps=3),
    SegPGD(eps=0.03, steps=4, random_start=False),
    APGD(eps=0.03, iters=5),
    APGD(eps=0.02, loss='js', iters=5, random_start=True),
    SEA(eps=0.03, iters=10),
]


@pytest.mark.parametrize('attack', ALL_ATTACKS, ids=repr)
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_radius_range_and_finiteness(attack, seed):
    net = TinyNet(seed=seed)
    images, labels = make_batch(seed=seed, net=net)
    out = attack(net, images, labels, generator=torch.Generator())
    assert out.images.shape == images.shape
    assert out.images.dtype == images.dtype
    assert out.eps.shape == (images.shape[0], )
    assert out.eps.dtype == torch.float32
    assert torch.isfinite(out.images).all() and torch.isfinite(out.eps).all()
    assert out.images.min() >= 0 and out.images.max() <= 1
    linf = (out.images - images).flatten(1).abs().amax(1)
    assert (linf <= out.eps + 1e-6).all()
    if attack.max_radius is not None:
        assert (out.eps <= attack.max_radius + 1e-7).all()
    # a real attack moves every sample of this batch
    assert (linf > 0).all()


@pytest.mark.parametrize('attack', ALL_ATTACKS, ids=repr)
def test_ignored_pixels_have_no_influence(attack):
    net = TinyNet()
    images, labels = make_batch()
    ignored = (labels == IGNORE).unsqueeze(1)

    def disturbed(x):
        # Change the logits of ignored pixels in an input-dependent way: if
        # they counted anywhere, the gradient (and the result) would change.
        logits = net(x)
        noise = 50 * torch.sin(7 * x.sum(1, keepdim=True)) * \
            torch.arange(logits.shape[1]).view(1, -1, 1, 1)
        return torch.where(ignored, logits + noise, logits)

    gen = torch.Generator()
    ref = attack(net, images, labels, generator=gen.manual_seed(3))
    out = attack(disturbed, images, labels, generator=gen.manual_seed(3))
    torch.testing.assert_close(out.images, ref.images)
    torch.testing.assert_close(out.eps, ref.eps)


@pytest.mark.parametrize('attack', ALL_ATTACKS, ids=repr)
def test_sample_without_labels_is_unchanged(attack):
    net = TinyNet()
    images, labels = make_batch(net=net)
    labels[1] = IGNORE
    out = attack(net, images, labels, generator=torch.Generator())
    assert torch.equal(out.images[1], images[1])
    assert out.eps[1] == 0
    assert (out.eps[[0, 2]] > 0).all()


@pytest.mark.parametrize('attack', ALL_ATTACKS, ids=repr)
def test_zero_gradient_gives_no_nan(attack):
    images, labels = make_batch()
    fixed = torch.randn(images.shape[0], 4, *images.shape[2:])

    def constant(x):  # depends on x, but with a zero gradient
        return fixed + 0 * x.sum()

    out = attack(constant, images, labels, generator=torch.Generator())
    assert torch.isfinite(out.images).all() and torch.isfinite(out.eps).all()
    if getattr(attack, 'random_start', False):
        # PGD keeps its random starting point inside the ball.
        linf = (out.images - images).flatten(1).abs().amax(1)
        assert (linf <= out.eps + 1e-6).all() and (out.eps > 0).all()
    else:
        assert torch.equal(out.images, images)
        assert (out.eps == 0).all()


@pytest.mark.parametrize('attack', ALL_ATTACKS, ids=repr)
def test_non_finite_logits_never_leave_the_attack(attack):
    net = TinyNet()
    images, labels = make_batch()

    def broken(x):
        logits = net(x)
        bad = torch.zeros_like(logits)
        bad[0] = float('nan')
        return logits + bad

    out = attack(broken, images, labels, generator=torch.Generator())
    assert torch.isfinite(out.images).all() and torch.isfinite(out.eps).all()
    assert torch.equal(out.images[0], images[0]) and out.eps[0] == 0


def test_losses_count_only_labelled_pixels():
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = IGNORE
    mask = labels != IGNORE
    ce = torch.nn.functional.cross_entropy(
        logits, labels.clamp(max=2), reduction='none')
    expected = (ce * mask).flatten(1).sum(1)
    torch.testing.assert_close(
        cross_entropy_sum(logits, labels, IGNORE), expected)
    z = logits.permute(0, 2, 3, 1)
    true = z.gather(-1, labels.clamp(max=2).unsqueeze(-1)).squeeze(-1)
    other = z.scatter(-1, labels.clamp(max=2).unsqueeze(-1), -1e9).amax(-1)
    expected = ((true - other) * mask).flatten(1).sum(1)
    torch.testing.assert_close(margin_sum(logits, labels, IGNORE), expected)


def test_fgsm_step_is_eps_sign_of_loss_gradient():
    net = TinyNet()
    images, labels = make_batch()
    images = images * 0.8 + 0.1  # away from the [0, 1] border
    x = images.clone().requires_grad_(True)
    loss = cross_entropy_sum(net(x), labels, IGNORE).sum()
    grad, = torch.autograd.grad(loss, x)
    out = FGSM(eps=0.05)(net, images, labels)
    torch.testing.assert_close(out.images, images + 0.05 * grad.sign())
    assert torch.equal(out.eps, torch.full((3, ), 0.05))


def test_random_fgsm_draws_radii_from_generator():
    net = TinyNet()
    images, labels = make_batch(n=6)
    attack = RandomFGSM(eps=0.03)
    a = attack(net, images, labels, generator=torch.Generator().manual_seed(1))
    b = attack(net, images, labels, generator=torch.Generator().manual_seed(1))
    c = attack(net, images, labels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.eps, b.eps)
    assert not torch.equal(a.eps, c.eps)
    assert ((a.eps >= 0) & (a.eps <= 0.03)).all()
    assert len(set(a.eps.tolist())) == 6  # one radius per sample


def test_bim_beats_fgsm_on_the_loss_and_projects():
    net = TinyNet(seed=4)
    images, labels = make_batch(n=4, seed=4)

    def loss(x):
        return cross_entropy_sum(net(x), labels, IGNORE).sum().item()

    fgsm = FGSM(eps=0.03)(net, images, labels).images
    bim = BIM(eps=0.03, alpha=0.004, steps=10)(net, images, labels).images
    assert loss(bim) > loss(fgsm) > loss(images)


class AffineNet(nn.Module):
    """Per-pixel logits that are an affine map of the whole image."""

    def __init__(self, shape=(3, 4, 4), num_classes=2, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.shape = shape
        pixels = shape[1] * shape[2]
        numel = int(np.prod(shape))
        self.weight = torch.randn(
            num_classes, pixels, numel, generator=gen, dtype=torch.float64)
        self.bias = torch.randn(
            num_classes, pixels, generator=gen, dtype=torch.float64)

    def forward(self, x):
        flat = x.double().flatten(1)  # (N, numel)
        logits = torch.einsum('kpd,nd->nkp', self.weight, flat) + self.bias
        return logits.reshape(x.shape[0], -1, *self.shape[1:]).float()


def test_fast_newton_is_exact_on_an_affine_model():
    net = AffineNet()
    gen = torch.Generator().manual_seed(0)
    images = 0.45 + 0.1 * torch.rand(2, 3, 4, 4, generator=gen)
    # Label every pixel with the model's own prediction so gbar > 0; with
    # two classes the margin is exactly affine, so Newton is exact.
    labels = net(images).argmax(1)
    labels[0, 0, 0] = IGNORE
    out = FastNewton()(net, images, labels)

    weight = net.weight.numpy()
    bias = net.bias.numpy()
    for i in range(2):
        x = images[i].double().flatten().numpy()
        y = labels[i].flatten().numpy()
        rows = [(weight[y[p], p] - weight[1 - y[p], p],
                 bias[y[p], p] - bias[1 - y[p], p]) for p in range(len(y))
                if y[p] != IGNORE]
        direction = np.mean([r[0] for r in rows], axis=0)
        offset = np.mean([r[1] for r in rows])
        gbar = direction @ x + offset
        eps = gbar / np.abs(direction).sum()
        assert out.eps[i].item() == pytest.approx(eps, rel=1e-4)
        x_adv = out.images[i].double().flatten().numpy()
        np.testing.assert_allclose(
            x_adv, x - eps * np.sign(direction), atol=1e-6)
        assert abs(direction @ x_adv + offset) < 1e-4 * abs(gbar)


def test_fast_newton_leaves_misclassified_samples_alone():
    net = AffineNet()
    images = 0.45 + 0.1 * torch.rand(2, 3, 4, 4)
    labels = net(images).argmax(1)
    labels[1] = 1 - labels[1]  # every pixel wrong: gbar < 0
    out = FastNewton()(net, images, labels)
    assert out.eps[1] == 0 and torch.equal(out.images[1], images[1])
    assert out.eps[0] > 0


def test_fast_newton_cap():
    net = AffineNet()
    images = 0.45 + 0.1 * torch.rand(2, 3, 4, 4)
    labels = net(images).argmax(1)
    free = FastNewton()(net, images, labels)
    cap = float(free.eps.min()) / 2
    capped = FastNewton(max_eps=cap)(net, images, labels)
    torch.testing.assert_close(capped.eps, torch.full((2, ), cap))
    linf = (capped.images - images).flatten(1).abs().amax(1)
    assert (linf <= cap + 1e-6).all()


def test_step_sizes_are_float32_under_autocast():
    net = TinyNet()
    images, labels = make_batch(net=net)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert net(images).dtype == torch.bfloat16
        for attack in (FastNewton(), FGSM(0.03)):
            out = attack(net, images, labels)
            assert out.eps.dtype == torch.float32
            assert out.images.dtype == torch.float32
            assert torch.isfinite(out.images).all() and (out.eps > 0).all()


def test_fgsm_sweep_reuses_one_gradient_and_matches_radius_by_radius():
    net = TinyNet()
    images, labels = make_batch()
    calls = []

    def counted(x):
        calls.append(1)
        return net(x)

    epsilons = [0, 0.005, 0.01, 0.04]
    swept = list(FGSM().sweep(counted, images, labels, epsilons))
    assert len(calls) == 1
    for eps, out in swept:
        single = FGSM(eps)(net, images, labels)
        torch.testing.assert_close(out.images, single.images)
        torch.testing.assert_close(out.eps, single.eps)


def test_bim_sweep_skips_radius_zero():
    net = TinyNet()
    images, labels = make_batch()
    calls = []

    def counted(x):
        calls.append(1)
        return net(x)

    swept = dict(
        BIM(0.02, 0.004, 10).sweep(counted, images, labels, [0, 0.02]))
    assert len(calls) == 10
    assert torch.equal(swept[0].images, images)


@pytest.mark.parametrize('cfg, error, word', [
    (dict(type='FGSM', eps=-0.1), ValueError, 'eps'),
    (dict(type='FGSM', eps='0.1'), TypeError, 'eps'),
    (dict(type='FGSM', eps=float('nan')), ValueError, 'eps'),
    (dict(type='RandomFGSM', eps=-1), ValueError, 'eps'),
    (dict(type='BIM', eps=0.03, alpha=0), ValueError, 'alpha'),
    (dict(type='BIM', eps=0.03, alpha=-0.01), ValueError, 'alpha'),
    (dict(type='BIM', eps=0.03, alpha=0.01, steps=0), ValueError, 'steps'),
    (dict(type='BIM', eps=0.03, alpha=0.01, steps=2.5), TypeError, 'steps'),
    (dict(type='FastNewton', max_eps=0), ValueError, 'max_eps'),
    (dict(type='FGSM', radius=0.03), TypeError, 'radius'),
])
def test_bad_arguments_are_refused_at_build_time(cfg, error, word):
    with pytest.raises(error, match=word):
        build_attack(cfg)


def test_unknown_attack_lists_registered_ones():
    with pytest.raises(KeyError) as info:
        build_attack(dict(type='PGD'))
    for name in ('FGSM', 'RandomFGSM', 'BIM', 'FastNewton'):
        assert name in str(info.value)
    with pytest.raises(KeyError, match='FastNewton'):
        build_attack(dict(eps=0.1))


def test_unreachable_bim_radius_warns():
    with pytest.warns(UserWarning, match='cannot reach'):
        BIM(eps=0.04, alpha=0.001, steps=10)
    with pytest.warns(UserWarning, match='cannot reach'):
        BIM(eps=0.01, alpha=0.004, steps=10).with_radius(0.05)


def test_build_passes_attack_objects_through():
    attack = FastNewton()
    assert build_attack(attack) is attack
    assert isinstance(build_attack(dict(type='BIM')), BIM)

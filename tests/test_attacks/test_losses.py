"""Pixel losses of the strong attacks, against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_fnm.attacks.losses import (LOSSES, balance, get_loss, segpgd_loss,
                                      tsallis_q)

IGNORE = 255


def logits_and_labels():
    # One image, 2x2 pixels, 3 classes: pixels 0 and 1 correct, pixel 2
    # wrong, pixel 3 ignored.
    logits = torch.tensor([[2., 0., 0.], [0., 3., 0.], [1., 0., 2.],
                           [0., 0., 5.]]).T.reshape(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [0, IGNORE]]])
    return logits, labels


def pixel_ce(logits, labels):
    return F.cross_entropy(
        logits, labels.clamp(max=2), reduction='none').flatten()


def test_segpgd_weights_at_first_and_last_step():
    logits, labels = logits_and_labels()
    ce = pixel_ce(logits, labels)
    steps = 10
    assert balance(1, steps) == 0
    assert balance(steps, steps) == pytest.approx((steps - 1) / (2 * steps))
    # t = 1: only the correct pixels count, with weight 1
    first = segpgd_loss(logits, labels, IGNORE, step=1, steps=steps)
    torch.testing.assert_close(first, (ce[0] + ce[1]).view(1))
    # t = T: correct pixels (1 - l_T), wrong ones l_T, ignored never
    lam = (steps - 1) / (2 * steps)
    last = segpgd_loss(logits, labels, IGNORE, step=steps, steps=steps)
    torch.testing.assert_close(last, ((1 - lam) * (ce[0] + ce[1]) +
                                      lam * ce[2]).view(1))


def test_masked_losses_count_only_correct_labelled_pixels():
    logits, labels = logits_and_labels()
    ce = pixel_ce(logits, labels)
    torch.testing.assert_close(
        get_loss('masked-ce')(logits, labels, IGNORE), (ce[0] + ce[1]).view(1))
    # classes 0 (2 labelled pixels) and 1 (1 pixel): 3 labelled pixels, so
    # each class carries 3 / 2; class 0's correct pixel weighs 3 / 4
    torch.testing.assert_close(
        get_loss('balanced-masked-ce')(logits, labels, IGNORE),
        (0.75 * ce[0] + 1.5 * ce[1]).view(1))
    torch.testing.assert_close(
        get_loss('ce')(logits, labels, IGNORE), ce[:3].sum().view(1))


def test_js_closed_form():
    logits, labels = logits_and_labels()
    p = torch.softmax(logits, 1).flatten(2)[0]  # (K, pixels)
    expected = 0.
    for pixel, label in enumerate([0, 1, 0]):
        onehot = F.one_hot(torch.tensor(label), 3).float()
        mean = (p[:, pixel] + onehot) / 2
        kl_p = (p[:, pixel] * (p[:, pixel] / mean).log()).sum()
        kl_y = math.log(1 / mean[label])
        expected += 0.5 * (kl_p + kl_y)
    torch.testing.assert_close(
        get_loss('js')(logits, labels, IGNORE), expected.view(1))


def test_tsallis_moves_from_q_minus_2_to_cross_entropy():
    logits, labels = logits_and_labels()
    ce = pixel_ce(logits, labels)[:3]
    p = (-ce).exp()
    assert tsallis_q(1, 5) == -2 and tsallis_q(5, 5) == 1
    loss = get_loss('tsallis')
    torch.testing.assert_close(
        loss(logits, labels, IGNORE, step=1, steps=5),
        ((1 - p**3) / 3).sum().view(1))
    torch.testing.assert_close(
        loss(logits, labels, IGNORE, step=5, steps=5),
        ce.sum().view(1))


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_every_loss_ignores_ignored_pixels(name):
    logits, labels = logits_and_labels()
    changed = logits.clone()
    changed[..., 1, 1] = torch.tensor([9., -4., 1.])  # the ignored pixel
    loss = get_loss(name)
    torch.testing.assert_close(
        loss(changed, labels, IGNORE, step=2, steps=3),
        loss(logits, labels, IGNORE, step=2, steps=3))


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_loss('dice')
    for name in ('masked-ce', 'balanced-masked-ce', 'js', 'tsallis'):
        assert name in str(info.value)

"""Losses, gradient penalty and R1 against values computed by hand on constructed inputs; augmentations keep
image-mask alignment, are differentiable, and ADA's p follows the overfitting heuristic."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medsynbench.gans.augment import ADA, DiffAugment, cutout, flip_augment, translate
from medsynbench.gans.losses import (Hinge, LeastSquares, NonSaturating, Wasserstein, WassersteinGP, build_loss,
                         gradient_penalty, r1_penalty)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def test_nonsaturating_bce_by_hand():
    loss = NonSaturating()
    d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    g = (softplus(-0.5) + softplus(3.0)) / 2
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_one_sided_label_smoothing_moves_only_the_real_target():
    loss = NonSaturating(label_smoothing=0.1)
    # BCE(x, t) = softplus(x) - t*x
    real = ((softplus(2.0) - 0.9 * 2.0) + (softplus(-1.0) + 0.9 * 1.0)) / 2
    fake = (softplus(0.5) + softplus(-3.0)) / 2
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(real + fake, rel=1e-6)
    ls = LeastSquares(label_smoothing=0.1)
    assert ls.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * ((2 - .9) ** 2 + (-1 - .9) ** 2) / 2
                                                         + 0.5 * (0.25 + 9) / 2, rel=1e-6)


def test_least_squares_by_hand():
    loss = LeastSquares()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (1 + 4) / 2 + 0.5 * (0.25 + 9) / 2)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5 * (0.25 + 16) / 2)


def test_wasserstein_and_hinge_by_hand():
    w = Wasserstein()
    assert w.d_loss(REAL, FAKE).item() == pytest.approx((0.5 - 3) / 2 - (2 - 1) / 2)
    assert w.g_loss(FAKE).item() == pytest.approx(1.25)
    h = Hinge()
    assert h.d_loss(REAL, FAKE).item() == pytest.approx((0 + 2) / 2 + (1.5 + 0) / 2)
    assert h.g_loss(FAKE).item() == pytest.approx(1.25)


def test_weight_clipping_clamps_every_critic_parameter():
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -0.5, 0.005, -2.0]]))
        critic.bias.fill_(3.0)
    Wasserstein(clip_value=0.01).after_d_step(critic)
    assert torch.equal(critic.weight, torch.tensor([[0.01, -0.01, 0.005, -0.01]]))
    assert critic.bias.item() == pytest.approx(0.01)


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    w = torch.tensor([3.0, 4.0, 0.0])  # ||w|| = 5 -> GP = 16 wherever it is evaluated
    critic = lambda x: x @ w  # noqa: E731
    real, fake = torch.randn(6, 3), torch.randn(6, 3)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)
    # A quadratic critic D(x) = 0.5||x||^2 has gradient x_hat: check against the interpolates by hand.
    alpha = torch.tensor([0.0, 1.0, 0.5])
    real, fake = torch.tensor([[1.0, 0], [0, 2.0], [2.0, 0]]), torch.tensor([[0, 3.0], [1.0, 0], [0, 0.0]])
    x_hat = torch.stack([fake[0], real[1], 0.5 * real[2] + 0.5 * fake[2]])
    expected = ((x_hat.norm(dim=1) - 1) ** 2).mean()
    got = gradient_penalty(lambda x: 0.5 * (x ** 2).sum(1), real, fake, alpha=alpha)
    assert got.item() == pytest.approx(expected.item())
    gp_loss = WassersteinGP(gp_weight=10.0).regularizer(critic, torch.randn(5, 3), torch.randn(5, 3))
    assert gp_loss.item() == pytest.approx(160.0)


def test_r1_penalty_by_hand_and_differentiable():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    scale = torch.tensor(3.0, requires_grad=True)
    logits = scale * (x ** 2).sum(1)           # grad = 2*scale*x -> ||.||^2 = 36 ||x||^2
    r1 = r1_penalty(logits, x)
    assert r1.item() == pytest.approx((36 * 5 + 36 * 1) / 2)
    r1.backward()                               # create_graph: the penalty trains D
    assert scale.grad.item() == pytest.approx(2 * 4 * 3 * (5 + 1) / 2)


def test_build_loss_refuses_keys_of_another_loss():
    assert isinstance(build_loss("wgan_gp", gp_weight=1.0), WassersteinGP)
    assert build_loss("wgan", clip_value=0.1, n_critic=3).n_critic == 3
    with pytest.raises(ValueError, match="only applies to loss 'wgan_gp'"):
        build_loss("hinge", gp_weight=10.0)
    with pytest.raises(ValueError, match="only applies to loss 'wgan'"):
        build_loss("nonsaturating", clip_value=0.01)
    with pytest.raises(ValueError, match="label_smoothing applies"):
        build_loss("hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("nope")


# --- augmentations ---------------------------------------------------------------------------------------------
def pair(n=4, size=16):
    """Image channel == mask channel (both in {-1, 1}): any misalignment shows as a difference."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(n, 1, size, size, generator=g) > 0.5).float() * 2 - 1
    return torch.cat([mask, mask], dim=1)


def test_translate_and_cutout_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = translate(x, torch.tensor([1]), torch.tensor([-1]))
    expected = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0.]])
    assert torch.equal(shifted[0, 0], expected)
    cut = cutout(torch.ones(1, 2, 4, 4), torch.tensor([1]), torch.tensor([2]), (2, 2))
    assert cut[0, 0].sum() == 12 and torch.equal(cut[0, 0, 0:2, 1:3], torch.zeros(2, 2))
    assert torch.equal(cut[0, 0], cut[0, 1])


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout"])
def test_diffaugment_geometry_keeps_image_mask_alignment(policy):
    torch.manual_seed(0)
    out = DiffAugment(policy, image_channels=1)(pair())
    assert torch.equal(out[:, 0], out[:, 1])
    assert not torch.equal(out, pair())


def test_diffaugment_colour_touches_only_image_channels_and_is_differentiable():
    torch.manual_seed(0)
    x = pair().requires_grad_(True)
    out = DiffAugment("color,translation,cutout", image_channels=1)(x)
    assert set(out[:, 1].unique().tolist()) <= {-1.0, 0.0, 1.0}   # mask: moved or zeroed, never recoloured
    assert not torch.equal(out[:, 0], out[:, 1])
    (out[:, 0] ** 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_flip_augment_flips_image_and_mask_together():
    torch.manual_seed(0)
    x = pair(n=32)
    out = flip_augment(x)
    flipped = (out != x).flatten(1).any(1)
    assert 0 < flipped.sum() < 32
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(out[:, 0], out[:, 1])


def test_ada_keeps_alignment_and_is_differentiable():
    torch.manual_seed(0)
    ada = ADA(image_channels=1, p_init=1.0)
    x = pair(n=8, size=32).requires_grad_(True)
    out = ada(x)
    assert not torch.allclose(out, x)
    # Geometry is shared; colour is a per-sample affine map of the image channel -> correlation 1 with the mask.
    img, msk = out[:, 0].flatten(1), out[:, 1].flatten(1)
    img, msk = img - img.mean(1, keepdim=True), msk - msk.mean(1, keepdim=True)
    corr = (img * msk).sum(1) / (img.norm(dim=1) * msk.norm(dim=1))
    assert torch.all(corr > 0.999), corr
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    assert torch.equal(ADA(1, p_init=0.0)(x), x)


def test_ada_probability_follows_the_overfitting_heuristic():
    ada = ADA(image_channels=1, target=0.6, speed_kimg=1.0)
    ada.accumulate(torch.tensor([1.0, 2.0, 3.0, -1.0]))     # r_t = 0.5 < 0.6: D not overfitting, p stays at 0
    assert ada.update(images_seen=100) == pytest.approx(0.5) and float(ada.p) == 0.0
    ada.accumulate(torch.ones(10))                           # r_t = 1 > 0.6: p += 100 / 1000
    assert ada.update(images_seen=100) == pytest.approx(1.0) and float(ada.p) == pytest.approx(0.1)
    ada.accumulate(-torch.ones(10))
    ada.update(images_seen=50)
    assert float(ada.p) == pytest.approx(0.05)


# --- StyleGAN2 building blocks ---------------------------------------------------------------------------------
def test_modulated_conv_equals_per_sample_modulated_demodulated_weights():
    from medsynbench.gans.stylegan2 import ModulatedConv
    torch.manual_seed(0)
    conv = ModulatedConv(4, 5, 3, w_dim=6, demodulate=True, noise=False)
    x, w = torch.randn(3, 4, 8, 8), torch.randn(3, 6)
    styles = conv.affine(w)
    expected = []
    for i in range(3):  # the paper's equations, one sample at a time
        wgt = conv.weight * conv.gain * styles[i].view(1, 4, 1, 1)
        wgt = wgt / wgt.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        y = torch.nn.functional.conv2d(x[i:i + 1], wgt, padding=1) + conv.bias.view(1, -1, 1, 1)
        expected.append(torch.nn.functional.leaky_relu(y, 0.2) * math.sqrt(2))
    torch.testing.assert_close(conv(x, w), torch.cat(expected), atol=1e-5, rtol=1e-5)
    # demodulation: unit output variance per channel for unit-variance input, whatever the style scale
    big = conv(x, w * 100)
    assert torch.isfinite(big).all()

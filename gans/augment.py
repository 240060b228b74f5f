"""Augmentations of what the discriminator sees.

- :class:`DiffAugment` (Zhao et al. 2020): colour / translation / cutout applied to real *and* fake samples,
  differentiable so the generator gets gradients through it.
- :class:`ADA` (Karras et al. 2020): a pipeline of geometric + colour transforms, each applied with probability p,
  where p follows the overfitting heuristic r_t = E[sign(D(real))].
- :func:`flip_augment`: the plain (non-differentiable) data augmentation of real training pairs.

Every transform works on the model's data tensor (image channels first, then one-hot mask channels): geometric
transforms move all channels together, so an image and its mask stay aligned; colour transforms touch only the
``image_channels`` first channels, since colour has no meaning for a mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynbench.nn import random_flips

DIFFAUG_OPS = ("color", "translation", "cutout")


def _colour(img: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor):
    """DiffAugment's colour ops on images in [-1, 1]; factors are [B,1,1,1]."""
    img = img + brightness                                    # brightness shift in [-0.5, 0.5]
    if img.shape[1] > 1:                                      # saturation is meaningless for grayscale
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * saturation + mean                # saturation x[0, 2]
    mean = img.mean(dim=[1, 2, 3], keepdim=True)
    return (img - mean) * contrast + mean                     # contrast x[0.5, 1.5]


def translate(x: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Integer per-sample translation with zero padding (differentiable w.r.t. x); shifts are [B] int64."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1) - shift_y.view(b, 1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - shift_x.view(b, 1, 1)
    valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)
    idx = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    out = torch.gather(x.flatten(2), 2, idx).view_as(x)
    return out * valid.to(x.dtype)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero a [size] rectangle centred at (cy, cx) per sample, in all channels."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0 = (cy - size[0] // 2).view(b, 1, 1)
    x0 = (cx - size[1] // 2).view(b, 1, 1)
    inside = (ys >= y0) & (ys < y0 + size[0]) & (xs >= x0) & (xs < x0 + size[1])
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DiffAugment(nn.Module):
    """Differentiable augmentation with a comma-separated policy, e.g. ``"color,translation,cutout"``."""

    def __init__(self, policy: str = "color,translation,cutout", image_channels: int = 3,
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5):
        super().__init__()
        self.ops = [op.strip() for op in policy.split(",") if op.strip()]
        unknown = [op for op in self.ops if op not in DIFFAUG_OPS]
        if unknown:
            raise ValueError(f"unknown DiffAugment op(s) {unknown}; choose from {DIFFAUG_OPS}")
        self.image_channels = image_channels
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        for op in self.ops:
            if op == "color":
                img, rest = x[:, :self.image_channels], x[:, self.image_channels:]
                one = torch.ones(b, 1, 1, 1, device=dev, dtype=x.dtype)
                img = _colour(img, (torch.rand_like(one) - 0.5), torch.rand_like(one) * 2,
                              torch.rand_like(one) + 0.5)
                x = torch.cat([img, rest], dim=1)
            elif op == "translation":
                sy, sx = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
                x = translate(x, torch.randint(-sy, sy + 1, (b,), device=dev),
                              torch.randint(-sx, sx + 1, (b,), device=dev))
            elif op == "cutout":
                size = (int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5))
                x = cutout(x, torch.randint(0, h + (1 - size[0] % 2), (b,), device=dev),
                           torch.randint(0, w + (1 - size[1] % 2), (b,), device=dev), size)
        return x


def flip_augment(x: torch.Tensor) -> torch.Tensor:
    """Plain data augmentation of real pairs: random horizontal flip per sample (image and mask channels together);
    :func:`medsynbench.nn.random_flips` without vertical flips."""
    return random_flips(x, vertical=False)[0]


class ADA(nn.Module):
    """Adaptive discriminator augmentation (simplified pure-PyTorch version of StyleGAN2-ADA's 'bgc' pipeline).

    Each transform is applied per sample with probability ``p``: x-flip, 90-degree rotation, integer translation,
    isotropic scaling, arbitrary rotation (one affine warp with reflection padding, so all channels move
    together), then brightness / contrast / saturation on the image channels. ``p`` is a buffer (saved with the
    model) and is adjusted by :meth:`update` from the sign of D's outputs on reals (the overfitting heuristic).
    """

    def __init__(self, image_channels: int, target: float = 0.6, speed_kimg: float = 500.0, p_init: float = 0.0,
                 p_max: float = 1.0):
        super().__init__()
        self.image_channels = image_channels
        self.target = target
        self.speed_kimg = speed_kimg
        self.p_max = p_max
        self.register_buffer("p", torch.tensor(float(p_init)))
        self.register_buffer("_sign_sum", torch.tensor(0.0))
        self.register_buffer("_sign_count", torch.tensor(0.0))

    def _mask(self, b: int, dev) -> torch.Tensor:
        return (torch.rand(b, device=dev) < self.p).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.p) <= 0:
            return x
        b, _, h, w = x.shape
        dev, dt = x.device, x.dtype
        eye = torch.eye(3, device=dev, dtype=dt).expand(b, 3, 3)
        mat = eye.clone()

        def compose(t):
            nonlocal mat
            mat = mat @ t

        # x-flip
        m = self._mask(b, dev).to(dt)
        t = eye.clone(); t[:, 0, 0] = 1 - 2 * m * (torch.rand(b, device=dev) < 0.5).to(dt)
        compose(t)
        # 90-degree rotations
        k = torch.randint(0, 4, (b,), device=dev).to(dt) * self._mask(b, dev).to(dt)
        ang = k * (math.pi / 2)
        compose(_rotation(ang))
        # integer translation (up to 1/8 of the image)
        m = self._mask(b, dev).to(dt)
        t = eye.clone()
        t[:, 0, 2] = (torch.rand(b, device=dev) * 2 - 1) * 0.125 * 2 * m
        t[:, 1, 2] = (torch.rand(b, device=dev) * 2 - 1) * 0.125 * 2 * m
        t[:, 0, 2] = torch.round(t[:, 0, 2] * w / 2) * 2 / w
        t[:, 1, 2] = torch.round(t[:, 1, 2] * h / 2) * 2 / h
        compose(t)
        # isotropic scaling, lognormal(0, 0.2 ln 2)
        m = self._mask(b, dev).to(dt)
        s = torch.exp2(torch.randn(b, device=dev) * 0.2 * m).to(dt)
        t = eye.clone(); t[:, 0, 0] = s; t[:, 1, 1] = s
        compose(t)
        # arbitrary rotation
        m = self._mask(b, dev).to(dt)
        compose(_rotation((torch.rand(b, device=dev) * 2 - 1) * math.pi * m))
        grid = F.affine_grid(mat[:, :2, :], list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # colour on the image channels only
        img, rest = x[:, :self.image_channels], x[:, self.image_channels:]
        img = img + (torch.randn(b, 1, 1, 1, device=dev, dtype=dt) * 0.2) * self._mask(b, dev).view(-1, 1, 1, 1)
        c = torch.exp2(torch.randn(b, 1, 1, 1, device=dev, dtype=dt) * 0.5 * self._mask(b, dev).view(-1, 1, 1, 1))
        mean = img.mean(dim=[1, 2, 3], keepdim=True)
        img = (img - mean) * c + mean
        if img.shape[1] > 1:
            sat = torch.exp2(torch.randn(b, 1, 1, 1, device=dev, dtype=dt) * self._mask(b, dev).view(-1, 1, 1, 1))
            mean = img.mean(dim=1, keepdim=True)
            img = (img - mean) * sat + mean
        return torch.cat([img, rest], dim=1)

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Collect sign(D(real)) for the next :meth:`update`."""
        self._sign_sum += torch.sign(real_logits.detach().float()).sum()
        self._sign_count += real_logits.numel()

    @torch.no_grad()
    def update(self, images_seen: int) -> float:
        """p += sign(r_t - target) * images_seen / (speed_kimg * 1000), clamped to [0, p_max]; returns r_t.

        As in the ADA paper's code (np.sign), r_t == target leaves p where it is; r_t is computed in float64 so
        that a ratio equal to the target (e.g. 48/80 = 0.6) is not pushed above it by float32 rounding."""
        if float(self._sign_count) == 0:
            return float("nan")
        r_t = float(self._sign_sum) / float(self._sign_count)
        diff = r_t - self.target
        adjust = (diff > 0) - (diff < 0)
        adjust = adjust * images_seen / (self.speed_kimg * 1000)
        self.p.copy_((self.p + adjust).clamp(0.0, self.p_max))
        self._sign_sum.zero_()
        self._sign_count.zero_()
        return r_t


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    b = angle.shape[0]
    t = torch.eye(3, device=angle.device, dtype=angle.dtype).repeat(b, 1, 1)
    c, s = torch.cos(angle), torch.sin(angle)
    t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1] = c, -s, s, c
    return t

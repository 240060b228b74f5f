"""Adversarial losses as small swappable objects (empirical study §3.2: one backbone, the loss swapped).

Each loss turns discriminator logits into a discriminator loss and a generator loss, may add a regulariser that
needs the discriminator itself (gradient penalty), may act after the discriminator's optimiser step (weight
clipping), and says how many discriminator updates it wants per generator update (``n_critic``).
The regularisers :func:`gradient_penalty` and :func:`r1_penalty` are plain functions so other models reuse them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynbench.amp import FP32, Amp


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, alpha: torch.Tensor | None = None, amp: Amp = FP32) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat.

    ``alpha`` ([B] in [0, 1]) can be given to make the value reproducible; by default it is drawn uniformly.
    The critic runs in ``amp.autocast()``; the input gradient is taken outside it through ``amp.grad`` (scaled
    under 16-mixed).
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.view(-1, *([1] * (real.ndim - 1))).to(real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with amp.autocast():
        out = critic(x_hat).sum()
    grad = amp.grad(out, x_hat)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, amp: Amp = FP32) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real data; ``real`` must have requires_grad set.
    The gradient is taken through ``amp.grad`` (scaled under 16-mixed)."""
    g = amp.grad(real_logits.sum(), real)
    return g.flatten(1).pow(2).sum(dim=1).mean()


class GANLoss:
    """Base: subclasses define ``d_loss`` and ``g_loss``; ``regularizer`` and ``after_d_step`` default to no-ops."""

    name = "base"

    def __init__(self, n_critic: int = 1, label_smoothing: float = 0.0):
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.n_critic = int(n_critic)
        self.label_smoothing = float(label_smoothing)

    @property
    def real_target(self) -> float:
        """One-sided label smoothing (Salimans et al. 2016): only the real target moves, 1 -> 1 - alpha."""
        return 1.0 - self.label_smoothing

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def regularizer(self, critic, real: torch.Tensor, fake: torch.Tensor, amp: Amp = FP32) -> torch.Tensor | None:
        return None

    def after_d_step(self, discriminator: nn.Module) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_critic={self.n_critic}, label_smoothing={self.label_smoothing})"


class NonSaturating(GANLoss):
    """DCGAN: binary cross-entropy on logits; the generator maximises log D(G(z)) (non-saturating form)."""

    name = "nonsaturating"

    def d_loss(self, real_logits, fake_logits):
        real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, self.real_target))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def g_loss(self, fake_logits):
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class LeastSquares(GANLoss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real), c=1 (generator), each term halved."""

    name = "lsgan"

    def d_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - self.real_target) ** 2).mean() + 0.5 * (fake_logits ** 2).mean()

    def g_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1.0) ** 2).mean()


class _NoSmoothing(GANLoss):
    """Losses without a classification target: label smoothing has no meaning there, so asking for it is an error."""

    def __init__(self, n_critic: int = 1, label_smoothing: float = 0.0):
        if label_smoothing:
            raise ValueError(f"label_smoothing applies to the BCE and least-squares losses, not to {self.name}")
        super().__init__(n_critic=n_critic)


class Wasserstein(_NoSmoothing):
    """WGAN (Arjovsky et al. 2017): critic maximises E[D(real)] - E[D(fake)]; Lipschitz via weight clipping.

    ``clip_value`` 0 disables clipping (Table 1 lists 0 / 0.01 / 0.1).
    """

    name = "wgan"

    def __init__(self, n_critic: int = 5, clip_value: float = 0.01, label_smoothing: float = 0.0):
        super().__init__(n_critic=n_critic, label_smoothing=label_smoothing)
        if clip_value < 0:
            raise ValueError(f"clip_value must be >= 0, got {clip_value}")
        self.clip_value = float(clip_value)

    def d_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()

    @torch.no_grad()
    def after_d_step(self, discriminator):
        if self.clip_value > 0:
            for p in discriminator.parameters():
                p.clamp_(-self.clip_value, self.clip_value)


class WassersteinGP(Wasserstein):
    """WGAN-GP: the Wasserstein loss with ``gp_weight`` x gradient penalty instead of clipping."""

    name = "wgan_gp"

    def __init__(self, n_critic: int = 5, gp_weight: float = 10.0, label_smoothing: float = 0.0):
        super().__init__(n_critic=n_critic, clip_value=0.0, label_smoothing=label_smoothing)
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
        self.gp_weight = float(gp_weight)

    def regularizer(self, critic, real, fake, amp: Amp = FP32):
        if self.gp_weight == 0:
            return None
        return self.gp_weight * gradient_penalty(critic, real, fake, amp=amp)


class Hinge(_NoSmoothing):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D: E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""

    name = "hinge"

    def d_loss(self, real_logits, fake_logits):
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits):
        return -fake_logits.mean()


LOSSES = {cls.name: cls for cls in (NonSaturating, LeastSquares, Wasserstein, WassersteinGP, Hinge)}


def build_loss(name: str, n_critic: int = 1, label_smoothing: float = 0.0, clip_value: float = 0.0,
               gp_weight: float = 0.0) -> GANLoss:
    """Loss by config name. Keys that belong to another loss must stay at 0 (a WGAN clip value on a hinge GAN is a
    config mistake, not something to ignore silently)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    if clip_value and name != "wgan":
        raise ValueError(f"clip_value={clip_value} only applies to loss 'wgan', not {name!r}")
    if gp_weight and name != "wgan_gp":
        raise ValueError(f"gp_weight={gp_weight} only applies to loss 'wgan_gp', not {name!r}")
    if name == "wgan":
        return Wasserstein(n_critic=n_critic, clip_value=clip_value, label_smoothing=label_smoothing)
    if name == "wgan_gp":
        return WassersteinGP(n_critic=n_critic, gp_weight=gp_weight, label_smoothing=label_smoothing)
    return LOSSES[name](n_critic=n_critic, label_smoothing=label_smoothing)

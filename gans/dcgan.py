"""The shared convolutional backbone of the empirical study (§3.2): a DCGAN generator (transposed convolutions)
and discriminator (strided convolutions) for any power-of-two resolution and channel count. DCGAN, LSGAN, WGAN,
WGAN-GP and HingeGAN are this one model with the loss swapped (``loss`` key); every Table 1 hyperparameter is a
constructor argument. With ``conditional: true`` it becomes a class-conditional GAN: a class embedding is
concatenated to z in G and D is a projection discriminator (Miyato & Koyama 2018).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynbench.gans.augment import DiffAugment, flip_augment
from medsynbench.gans.base import GAN, register_gan
from medsynbench.gans.layers import activation, apply_spectral_norm, init_weights, norm2d, num_doublings
from medsynbench.gans.losses import build_loss
from medsynbench.amp import FP32, Amp


def _width(base: int, level: int) -> int:
    """Channel width doubles per level towards 4x4, capped at 8x (as in DCGAN)."""
    return base * min(8, 2 ** level)


class DCGANGenerator(nn.Module):
    """z [B, latent] (+ class embedding) -> 4x4 -> ... -> image_size, tanh output in [-1, 1]."""

    def __init__(self, image_size: int, out_channels: int, latent_dim: int, filters: int, act: str, norm: str,
                 num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        n_up = num_doublings(image_size)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        ch = _width(filters, n_up - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=norm == "none"),
                                   norm2d(norm, ch), activation(act)]
        for level in range(n_up - 2, -1, -1):
            nxt = _width(filters, level)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1, bias=norm == "none"), norm2d(norm, nxt), activation(act)]
            ch = nxt
        layers += [nn.ConvTranspose2d(ch, out_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """image_size -> ... -> 4x4 -> one logit per sample; ``forward`` also returns the intermediate features
    (for the feature-matching loss). Conditional: + <embed(y), pooled features> (projection)."""

    def __init__(self, image_size: int, in_channels: int, filters: int, act: str, norm: str, num_classes: int = 0):
        super().__init__()
        n_down = num_doublings(image_size)
        blocks = [nn.Sequential(nn.Conv2d(in_channels, filters, 4, 2, 1), activation(act))]  # no norm on input
        ch = filters
        for level in range(1, n_down):
            nxt = _width(filters, level)
            blocks.append(nn.Sequential(nn.Conv2d(ch, nxt, 4, 2, 1, bias=norm == "none"), norm2d(norm, nxt),
                                        activation(act)))
            ch = nxt
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(ch, 1, 4, 1, 0)
        self.embed = nn.Embedding(num_classes, ch) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        logits = self.out(x).flatten(1).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * x.sum(dim=(2, 3))).sum(dim=1)
        return (logits, feats) if return_features else logits


@register_gan("dcgan")
class DCGAN(GAN):
    """DCGAN-family model; see the module docstring. Keys mirror the empirical study's Table 1."""

    def __init__(self, name: str, image_size: int, image_channels: int, num_mask_classes: int = 0,
                 num_classes: int = 0, conditional: bool = False, latent_dim: int = 100,
                 loss: str = "nonsaturating", n_critic: int = 1, gp_weight: float = 0.0, clip_value: float = 0.0,
                 label_smoothing: float = 0.0,
                 g_filters: int = 64, d_filters: int = 64, g_activation: str = "relu",
                 d_activation: str = "leaky_relu", g_norm: str = "batch", d_norm: str = "batch",
                 g_spectral_norm: bool = False, d_spectral_norm: bool = False,
                 init: str = "normal", init_gain: float = 0.02, embed_dim: int = 32,
                 diffaugment: bool = False, diffaugment_policy: str = "color,translation,cutout",
                 data_augmentation: bool = False, fm_weight: float = 0.0, vgg_weight: float = 0.0,
                 vgg_weights: str | None = None):
        super().__init__(name=name, image_size=image_size, image_channels=image_channels,
                         num_mask_classes=num_mask_classes, num_classes=num_classes, conditional=conditional,
                         latent_dim=latent_dim)
        self.loss = build_loss(loss, n_critic=n_critic, label_smoothing=label_smoothing, clip_value=clip_value,
                               gp_weight=gp_weight)
        self.generator = DCGANGenerator(image_size, self.data_channels, latent_dim, g_filters, g_activation, g_norm,
                                        self.num_classes, embed_dim)
        self.discriminator = DCGANDiscriminator(image_size, self.data_channels, d_filters, d_activation, d_norm,
                                                self.num_classes)
        init_weights(self.generator, init, init_gain)
        init_weights(self.discriminator, init, init_gain)
        if g_spectral_norm:
            apply_spectral_norm(self.generator)
        if d_spectral_norm:
            apply_spectral_norm(self.discriminator)
        self._init_ema()
        self.diffaugment = DiffAugment(diffaugment_policy, image_channels) if diffaugment else None
        self.data_augmentation = bool(data_augmentation)
        self.fm_weight = float(fm_weight)
        self.vgg_weight = float(vgg_weight)
        # Kept outside the module tree: frozen ImageNet weights do not belong in GAN checkpoints.
        self._vgg = [None]
        if self.vgg_weight > 0:
            from medsynbench.gans.perceptual import VGGPerceptual
            self._vgg[0] = VGGPerceptual(vgg_weights, paired=False)

    def _d_view(self, x: torch.Tensor) -> torch.Tensor:
        return self.diffaugment(x) if self.diffaugment is not None else x

    def _perceptual(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        vgg = self._vgg[0]
        if next(vgg.buffers()).device != fake.device:
            vgg.to(fake.device)
        return vgg(fake[:, :self.image_channels], real[:, :self.image_channels])

    def train_step(self, batch: dict, optimizers: dict, step: int, amp: Amp = FP32) -> dict[str, float]:
        G, D, opt_g, opt_d = self.generator, self.discriminator, optimizers["g"], optimizers["d"]
        real = self.real_pairs(batch)
        labels = self.batch_labels(batch)
        if self.data_augmentation:
            real = flip_augment(real)
        b = real.shape[0]
        out: dict[str, float] = {}

        # --- discriminator: n_critic updates on this batch ---
        self.critic_updates(lambda x: D(x, labels), real,
                            lambda: G(torch.randn(b, self.latent_dim, device=real.device), labels), opt_d, out, amp)

        # --- generator ---
        D.requires_grad_(False)
        with amp.autocast():
            fake = G(torch.randn(b, self.latent_dim, device=real.device), labels)
            if self.fm_weight > 0:
                fake_logits, fake_feats = D(self._d_view(fake), labels, return_features=True)
                with torch.no_grad():
                    _, real_feats = D(self._d_view(real), labels, return_features=True)
                fm = sum(F.mse_loss(f.mean(0), r.mean(0)) for f, r in zip(fake_feats, real_feats))
            else:
                fake_logits = D(self._d_view(fake), labels)
                fm = None
            loss_g = self.loss.g_loss(fake_logits)
            out["loss_g_adv"] = float(loss_g.detach())
            if fm is not None:
                out["fm"] = float(fm.detach())
                loss_g = loss_g + self.fm_weight * fm
            if self.vgg_weight > 0:
                vgg = self._perceptual(fake, real)
                out["vgg"] = float(vgg.detach())
                loss_g = loss_g + self.vgg_weight * vgg
        return self.generator_update(loss_g, opt_g, out, amp)

    def _generate(self, net, z, labels, masks, noise_seeds):
        return net(z, labels)

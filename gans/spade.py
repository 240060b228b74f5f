"""SPADE (Park et al. 2019): a generator conditioned on a segmentation mask through spatially-adaptive
normalisation, a multi-scale PatchGAN discriminator on image + mask, and pix2pixHD's feature-matching loss.

The generator takes a mask and z and makes the image, so each sample is an image-mask pair by construction. At
evaluation, as in the empirical study, images are sampled from real training masks that the caller passes
(``sample(n, seed, masks=gans.draw_train_masks(train.masks, n, seed))``; ``mask_source == "real_train_masks"``).
When no masks are given (sample grids, quick looks), the model draws from a bank of the training masks it saw
during training (a buffer saved with it).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from medsynbench.gans.augment import DiffAugment, flip_augment
from medsynbench.gans.base import GAN, register_gan
from medsynbench.gans.layers import num_doublings
from medsynbench.gans.losses import build_loss
from medsynbench.gans.pairs import stack_pair
from medsynbench.amp import FP32, Amp


def _sn(module: nn.Module, use: bool) -> nn.Module:
    return spectral_norm(module) if use else module


class SPADENorm(nn.Module):
    """Parameter-free normalisation, then a per-pixel scale and shift predicted from the (resized) mask."""

    def __init__(self, channels: int, label_channels: int, hidden: int, norm: str = "instance"):
        super().__init__()
        if norm == "instance":
            self.norm = nn.InstanceNorm2d(channels, affine=False)
        elif norm == "batch":
            self.norm = nn.BatchNorm2d(channels, affine=False)
        else:
            raise ValueError(f"SPADE param-free norm must be 'instance' or 'batch', got {norm!r}")
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        a = self.shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return self.norm(x) * (1 + self.gamma(a)) + self.beta(a)


class SPADEResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int, norm: str, sn: bool):
        super().__init__()
        mid = min(cin, cout)
        self.norm_0 = SPADENorm(cin, label_channels, hidden, norm)
        self.conv_0 = _sn(nn.Conv2d(cin, mid, 3, padding=1), sn)
        self.norm_1 = SPADENorm(mid, label_channels, hidden, norm)
        self.conv_1 = _sn(nn.Conv2d(mid, cout, 3, padding=1), sn)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADENorm(cin, label_channels, hidden, norm)
            self.conv_s = _sn(nn.Conv2d(cin, cout, 1, bias=False), sn)

    def forward(self, x, seg):
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return skip + dx


class SPADEGenerator(nn.Module):
    """z -> 4x4 features -> SPADE residual blocks with x2 upsampling -> image (tanh)."""

    def __init__(self, image_size: int, image_channels: int, label_channels: int, latent_dim: int, filters: int,
                 hidden: int, norm: str, sn: bool):
        super().__init__()
        n_up = num_doublings(image_size)
        widths = [filters * min(8, 2 ** level) for level in range(n_up, -1, -1)]  # 4x4 ... image_size
        self.fc = nn.Linear(latent_dim, widths[0] * 16)
        self.head = SPADEResBlock(widths[0], widths[0], label_channels, hidden, norm, sn)
        self.blocks = nn.ModuleList(SPADEResBlock(widths[i], widths[i + 1], label_channels, hidden, norm, sn)
                                    for i in range(n_up))
        self.out = nn.Conv2d(widths[-1], image_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        x = self.head(x, seg)
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.tanh(self.out(F.leaky_relu(x, 0.2)))


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): returns the list of intermediate features, the last one being the logit map."""

    def __init__(self, in_channels: int, filters: int, n_layers: int, sn: bool):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(in_channels, filters, 4, 2, 2), nn.LeakyReLU(0.2))]
        ch = filters
        for i in range(1, n_layers):
            nxt = min(ch * 2, filters * 8)
            stride = 1 if i == n_layers - 1 else 2
            layers.append(nn.Sequential(_sn(nn.Conv2d(ch, nxt, 4, stride, 2, bias=False), sn),
                                        nn.InstanceNorm2d(nxt, affine=False), nn.LeakyReLU(0.2)))
            ch = nxt
        layers.append(nn.Sequential(nn.Conv2d(ch, 1, 4, 1, 2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs, each on a 2x smaller copy of the input than the previous one."""

    def __init__(self, in_channels: int, filters: int, n_layers: int, num_d: int, sn: bool):
        super().__init__()
        self.discs = nn.ModuleList(PatchDiscriminator(in_channels, filters, n_layers, sn) for _ in range(num_d))

    def forward(self, x):
        outs = []
        for i, disc in enumerate(self.discs):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(disc(x))
        return outs


def _logits(outs) -> torch.Tensor:
    """Per-sample score: the mean of each scale's patch logits, summed over scales ([B])."""
    return torch.stack([o[-1].flatten(1).mean(1) for o in outs]).sum(0)


@register_gan("spade")
class SPADE(GAN):
    """SPADE GAN; needs a dataset with masks (num_mask_classes >= 2)."""

    takes_masks = True

    def __init__(self, name: str, image_size: int, image_channels: int, num_mask_classes: int = 0,
                 num_classes: int = 0, conditional: bool = False, latent_dim: int = 256,
                 loss: str = "hinge", n_critic: int = 1, gp_weight: float = 0.0, label_smoothing: float = 0.0,
                 g_filters: int = 64, d_filters: int = 64, spade_hidden: int = 128, param_free_norm: str = "instance",
                 g_spectral_norm: bool = True, d_spectral_norm: bool = True, num_d: int = 2, d_layers: int = 4,
                 fm_weight: float = 10.0, vgg_weight: float = 0.0, vgg_weights: str | None = None,
                 diffaugment: bool = False, diffaugment_policy: str = "color,translation,cutout",
                 data_augmentation: bool = False, mask_bank_size: int = 512):
        if num_mask_classes < 2:
            raise ValueError(f"SPADE generates images from segmentation masks: it needs a dataset with masks "
                             f"(num_mask_classes >= 2), got num_mask_classes={num_mask_classes}")
        if conditional or num_classes:
            raise ValueError("SPADE here is mask-conditioned only; use a class-conditional GAN for labels")
        super().__init__(name=name, image_size=image_size, image_channels=image_channels,
                         num_mask_classes=num_mask_classes, latent_dim=latent_dim)
        self.loss = build_loss(loss, n_critic=n_critic, label_smoothing=label_smoothing, gp_weight=gp_weight)
        self.generator = SPADEGenerator(image_size, image_channels, num_mask_classes, latent_dim, g_filters,
                                        spade_hidden, param_free_norm, g_spectral_norm)
        self.discriminator = MultiScaleDiscriminator(self.data_channels, d_filters, d_layers, num_d, d_spectral_norm)
        self._init_ema()
        self.fm_weight = float(fm_weight)
        self.vgg_weight = float(vgg_weight)
        self.diffaugment = DiffAugment(diffaugment_policy, image_channels) if diffaugment else None
        self.data_augmentation = bool(data_augmentation)
        self.register_buffer("mask_bank", torch.zeros(mask_bank_size, image_size, image_size, dtype=torch.uint8))
        self.register_buffer("mask_bank_count", torch.zeros((), dtype=torch.long))
        self._vgg = [None]
        if self.vgg_weight > 0:
            from medsynbench.gans.perceptual import VGGPerceptual
            self._vgg[0] = VGGPerceptual(vgg_weights, paired=True)

    def _onehot(self, masks: torch.Tensor) -> torch.Tensor:
        return F.one_hot(masks.long(), self.num_mask_classes).permute(0, 3, 1, 2).float()

    @torch.no_grad()
    def _remember_masks(self, masks: torch.Tensor) -> None:
        size = self.mask_bank.shape[0]
        if size == 0:
            return
        start = int(self.mask_bank_count)
        idx = torch.arange(start, start + masks.shape[0], device=masks.device) % size
        self.mask_bank[idx[-size:]] = masks[-size:].to(torch.uint8)
        self.mask_bank_count += masks.shape[0]

    def _sample_masks(self, n, gen):
        filled = min(int(self.mask_bank_count), self.mask_bank.shape[0])
        if filled == 0:
            raise ValueError(f"{self.name}: SPADE needs masks to sample; pass masks= (e.g. real training masks) "
                             "or train the model first so it has a bank of training masks")
        return self.mask_bank[torch.randint(filled, (n,), generator=gen)].long().cpu()

    def _d_view(self, x):
        return self.diffaugment(x) if self.diffaugment is not None else x

    def train_step(self, batch: dict, optimizers: dict, step: int, amp: Amp = FP32) -> dict[str, float]:
        G, D, opt_g, opt_d = self.generator, self.discriminator, optimizers["g"], optimizers["d"]
        if batch.get("masks") is None:
            raise ValueError(f"{self.name}: SPADE batches need 'masks'")
        real = self.real_pairs(batch)
        if self.data_augmentation:
            real = flip_augment(real)
        images, masks = real[:, :self.image_channels], real[:, self.image_channels:].argmax(1)
        self._remember_masks(masks)
        seg = self._onehot(masks)
        b = real.shape[0]
        out: dict[str, float] = {}

        self.critic_updates(lambda x: _logits(D(x)), real,
                            lambda: stack_pair(G(torch.randn(b, self.latent_dim, device=real.device), seg), masks,
                                               self.num_mask_classes), opt_d, out, amp)

        D.requires_grad_(False)
        with amp.autocast():
            fake_images = G(torch.randn(b, self.latent_dim, device=real.device), seg)
            fake = stack_pair(fake_images, masks, self.num_mask_classes)
            fake_outs = D(self._d_view(fake))
            loss_g = self.loss.g_loss(_logits(fake_outs))
            out["loss_g_adv"] = float(loss_g.detach())
            if self.fm_weight > 0:
                with torch.no_grad():
                    real_outs = D(self._d_view(real))
                fm = sum(F.l1_loss(f, r) for fo, ro in zip(fake_outs, real_outs) for f, r in zip(fo[:-1], ro[:-1]))
                fm = fm / len(fake_outs)
                out["fm"] = float(fm.detach())
                loss_g = loss_g + self.fm_weight * fm
            if self.vgg_weight > 0:
                vgg = self._vgg[0]
                if next(vgg.buffers()).device != images.device:
                    vgg.to(images.device)
                perc = vgg(fake_images, images)
                out["vgg"] = float(perc.detach())
                loss_g = loss_g + self.vgg_weight * perc
        return self.generator_update(loss_g, opt_g, out, amp)

    def _generate(self, net, z, labels, masks, noise_seeds):
        return net(z, self._onehot(masks))

"""A StyleGAN2-ADA-class model in plain PyTorch (Karras et al. 2020a, 2020b), without custom CUDA kernels.

Kept: mapping network with equalised learning rate (lr multiplier 0.01), modulated + demodulated convolutions,
per-layer noise inputs with learned strength, skip-connection generator and residual discriminator with
minibatch-stddev, style mixing, truncation, non-saturating logistic loss, lazy R1 and path-length regularisation
(with the optimiser's lr/betas adjusted for lazy intervals), adaptive discriminator augmentation whose
probability follows the r_t = E[sign(D(real))] heuristic, optional class conditioning (label embedding into the
mapping network, projection in D).
Simplified: up/down-sampling uses bilinear interpolation / average pooling instead of FIR filters, and the ADA
pipeline is a shorter one (gans/augment.py). Size is set by config: ``channel_base``/``channel_max``/
``mapping_layers`` small for a CPU at 32-64 px (conf/gan/stylegan2.yaml), large for full size on a GPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynbench.gans.augment import ADA
from medsynbench.gans.base import GAN, register_gan
from medsynbench.gans.layers import num_doublings
from medsynbench.gans.losses import r1_penalty
from medsynbench.amp import FP32, Amp
from medsynbench.nn import make_optimizer

SQRT2 = math.sqrt(2.0)


def _norm2(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored at N(0, 1/lr_mul), scaled at run time."""

    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_f,), float(bias_init)))
        self.w_gain, self.b_gain, self.act = lr_mul / math.sqrt(in_f), lr_mul, act

    def forward(self, x):
        x = F.linear(x, self.weight * self.w_gain, self.bias * self.b_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.act else x


class EqConv2d(nn.Module):
    """Conv with equalised learning rate; ``down`` halves the resolution (average pooling first)."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain, self.act, self.down, self.pad = 1 / math.sqrt(cin * k * k), act, down, k // 2

    def forward(self, x):
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.act else x


class MappingNetwork(nn.Module):
    """z (+ label embedding) -> w; tracks the running mean of w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_classes: int, layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.embed = EqLinear(num_classes, w_dim) if num_classes else None
        self.num_classes = num_classes
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.fcs = nn.ModuleList(EqLinear(dims[i], dims[i + 1], lr_mul=lr_mul, act=True) for i in range(layers))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, labels=None, truncation_psi: float = 1.0, update_w_avg: bool = False):
        x = _norm2(z)
        if self.embed is not None:
            x = torch.cat([x, _norm2(self.embed(F.one_hot(labels, self.num_classes).to(z.dtype)))], dim=1)
        for fc in self.fcs:
            x = fc(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class ModulatedConv(nn.Module):
    """Per-sample weights: scale input channels by the style, optionally demodulate, grouped conv."""

    def __init__(self, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True, up: bool = False,
                 act: bool = True, noise: bool = True):
        super().__init__()
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(())) if noise else None
        self.demodulate, self.up, self.act, self.k = demodulate, up, act, k
        self.gain = 1 / math.sqrt(cin * k * k)

    def forward(self, x, w, noise=None):
        # Non-fused form (StyleGAN2's training path): scale the input by the style, one ordinary convolution for
        # the batch, then scale the output by the demodulation coefficients. It equals the per-sample grouped
        # convolution mathematically and is much faster on a CPU.
        styles = self.affine(w)                                   # [B, cin]
        weight = self.weight * self.gain
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=self.k // 2)
        if self.demodulate:
            dcoefs = (weight.unsqueeze(0) * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4])
            x = x * (dcoefs + 1e-8).rsqrt()[:, :, None, None]
        h, wd = x.shape[2:]
        if self.noise_strength is not None:
            if noise is None:
                noise = torch.randn(x.shape[0], 1, h, wd, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        x = x + self.bias.view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.act else x


def _channels(res: int, base: int, cap: int) -> int:
    return int(min(base // res, cap))


class SynthesisNetwork(nn.Module):
    """Constant 4x4 input, two modulated convs per resolution, toRGB skip connections."""

    def __init__(self, image_size: int, out_channels: int, w_dim: int, channel_base: int, channel_max: int):
        super().__init__()
        self.resolutions = [4 * 2 ** i for i in range(num_doublings(image_size) + 1)]
        ch = {r: _channels(r, channel_base, channel_max) for r in self.resolutions}
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.convs = nn.ModuleList([ModulatedConv(ch[4], ch[4], 3, w_dim)])
        self.torgbs = nn.ModuleList([ModulatedConv(ch[4], out_channels, 1, w_dim, demodulate=False, act=False,
                                                   noise=False)])
        for prev, res in zip(self.resolutions[:-1], self.resolutions[1:]):
            self.convs.append(ModulatedConv(ch[prev], ch[res], 3, w_dim, up=True))
            self.convs.append(ModulatedConv(ch[res], ch[res], 3, w_dim))
            self.torgbs.append(ModulatedConv(ch[res], out_channels, 1, w_dim, demodulate=False, act=False,
                                             noise=False))
        self.num_ws = len(self.convs) + 1

    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(r, r) for r in [4] + [r for r in self.resolutions[1:] for _ in range(2)]]

    def forward(self, ws, noise=None):
        b = ws.shape[0]
        x = self.const.unsqueeze(0).expand(b, -1, -1, -1)
        noise = noise or [None] * len(self.convs)
        x = self.convs[0](x, ws[:, 0], noise[0])
        img = self.torgbs[0](x, ws[:, 1])
        for i in range(1, len(self.resolutions)):
            x = self.convs[2 * i - 1](x, ws[:, 2 * i - 1], noise[2 * i - 1])
            x = self.convs[2 * i](x, ws[:, 2 * i], noise[2 * i])
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + \
                self.torgbs[i](x, ws[:, 2 * i + 1])
        return img


class StyleGenerator(nn.Module):
    def __init__(self, image_size, out_channels, z_dim, w_dim, num_classes, mapping_layers, channel_base,
                 channel_max):
        super().__init__()
        self.synthesis = SynthesisNetwork(image_size, out_channels, w_dim, channel_base, channel_max)
        self.mapping = MappingNetwork(z_dim, w_dim, num_classes, mapping_layers)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z, labels=None, truncation_psi: float = 1.0, noise=None):
        w = self.mapping(z, labels, truncation_psi)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1), noise)


class ResidualDiscriminator(nn.Module):
    def __init__(self, image_size, in_channels, num_classes, channel_base, channel_max, mbstd_group=4,
                 cmap_dim: int = 128):
        super().__init__()
        res = [4 * 2 ** i for i in range(num_doublings(image_size) + 1)][::-1]  # image_size ... 4
        ch = {r: _channels(r, channel_base, channel_max) for r in res}
        self.fromrgb = EqConv2d(in_channels, ch[image_size], 1)
        self.blocks = nn.ModuleList()
        for r in res[:-1]:
            self.blocks.append(nn.ModuleDict({
                "conv0": EqConv2d(ch[r], ch[r], 3), "conv1": EqConv2d(ch[r], ch[r // 2], 3, down=True),
                "skip": EqConv2d(ch[r], ch[r // 2], 1, bias=False, act=False, down=True)}))
        self.mbstd_group = mbstd_group
        self.conv = EqConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqLinear(ch[4] * 16, ch[4], act=True)
        self.num_classes = num_classes
        self.out = EqLinear(ch[4], cmap_dim if num_classes else 1)
        self.cmap = EqLinear(num_classes, cmap_dim) if num_classes else None

    def _mbstd(self, x):
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # [B/g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, x, labels=None):
        x = self.fromrgb(x)
        for blk in self.blocks:
            x = (blk["skip"](x) + blk["conv1"](blk["conv0"](x))) / SQRT2
        x = self.conv(self._mbstd(x))
        out = self.out(self.fc(x.flatten(1)))
        if self.cmap is not None:
            cmap = self.cmap(F.one_hot(labels, self.num_classes).to(x.dtype))
            return (out * cmap).sum(dim=1) / math.sqrt(cmap.shape[1])
        return out.squeeze(1)


@register_gan("stylegan2")
class StyleGAN2(GAN):
    """StyleGAN2-ADA-class GAN; see the module docstring. Learns image (+ one-hot mask) channels jointly."""

    def __init__(self, name: str, image_size: int, image_channels: int, num_mask_classes: int = 0,
                 num_classes: int = 0, conditional: bool = False, latent_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8, channel_base: int = 32768, channel_max: int = 512,
                 mbstd_group: int = 4, style_mixing_prob: float = 0.9,
                 r1_gamma: float = 10.0, r1_interval: int = 16, pl_weight: float = 2.0, pl_interval: int = 4,
                 pl_batch_shrink: int = 2, pl_decay: float = 0.01,
                 ada: bool = True, ada_target: float = 0.6, ada_interval: int = 4, ada_kimg: float = 500.0,
                 ada_p_init: float = 0.0, truncation_psi: float = 1.0, ada_p_max: float = 1.0):
        super().__init__(name=name, image_size=image_size, image_channels=image_channels,
                         num_mask_classes=num_mask_classes, num_classes=num_classes, conditional=conditional,
                         latent_dim=latent_dim)
        self.generator = StyleGenerator(image_size, self.data_channels, latent_dim, w_dim, self.num_classes,
                                        mapping_layers, channel_base, channel_max)
        self.discriminator = ResidualDiscriminator(image_size, self.data_channels, self.num_classes, channel_base,
                                                   channel_max, mbstd_group)
        self._init_ema()
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma, self.r1_interval = r1_gamma, max(1, int(r1_interval))
        self.pl_weight, self.pl_interval = pl_weight, max(1, int(pl_interval))
        self.pl_batch_shrink, self.pl_decay = max(1, int(pl_batch_shrink)), pl_decay
        self.register_buffer("pl_mean", torch.zeros(()))
        if not 0.0 <= ada_p_init <= ada_p_max <= 1.0:
            raise ValueError(f"gan.ada_p_init ({ada_p_init}) and gan.ada_p_max ({ada_p_max}) must satisfy "
                             "0 <= ada_p_init <= ada_p_max <= 1")
        self.ada = ADA(image_channels, target=ada_target, speed_kimg=ada_kimg, p_init=ada_p_init,
                       p_max=ada_p_max) if ada else None
        self.ada_interval = max(1, int(ada_interval))
        self.truncation_psi = truncation_psi

    def configure_optimizers(self, lr_g, lr_d, betas, optimizer="adam"):
        """Lazy regularisation (R1 every r1_interval, PL every pl_interval steps): lr and betas are rescaled by
        interval / (interval + 1) as in StyleGAN2, so the effective optimiser matches the non-lazy one."""
        self._check_optimizer(optimizer)
        out = {}
        for key, net, lr, interval in (("g", self.generator, lr_g, self.pl_interval if self.pl_weight else 0),
                                       ("d", self.discriminator, lr_d, self.r1_interval if self.r1_gamma else 0)):
            ratio = interval / (interval + 1) if interval else 1.0
            out[key] = make_optimizer(net.parameters(), optimizer, lr * ratio, tuple(b ** ratio for b in betas))
        return out

    def _augment(self, x):
        return self.ada(x) if self.ada is not None else x

    def _ws(self, z, labels, update_w_avg=False):
        """Mapping with style mixing: from a random layer on, the ws of a second latent are used."""
        mapping, num_ws = self.generator.mapping, self.generator.num_ws
        ws = mapping(z, labels, update_w_avg=update_w_avg).unsqueeze(1).repeat(1, num_ws, 1)
        if self.style_mixing_prob > 0 and torch.rand(()) < self.style_mixing_prob:
            cutoff = int(torch.randint(1, num_ws, ()))
            ws2 = mapping(torch.randn_like(z), labels)
            ws = torch.cat([ws[:, :cutoff], ws2.unsqueeze(1).expand(-1, num_ws - cutoff, -1)], dim=1)
        return ws

    def train_step(self, batch: dict, optimizers: dict, step: int, amp: Amp = FP32) -> dict[str, float]:
        G, D, opt_g, opt_d = self.generator, self.discriminator, optimizers["g"], optimizers["d"]
        real = self.real_pairs(batch)
        labels = self.batch_labels(batch)
        b, dev = real.shape[0], real.device
        out: dict[str, float] = {}

        # --- G: non-saturating logistic loss (+ lazy path-length regularisation) ---
        D.requires_grad_(False)
        with amp.autocast():
            fake = G.synthesis(self._ws(torch.randn(b, self.latent_dim, device=dev), labels, update_w_avg=True))
            loss_g = F.softplus(-D(self._augment(fake), labels)).mean()
        out["loss_g"] = float(loss_g.detach())
        if self.pl_weight > 0 and step % self.pl_interval == 0:
            pb = max(1, b // self.pl_batch_shrink)
            with amp.autocast():
                ws = self._ws(torch.randn(pb, self.latent_dim, device=dev), None if labels is None else labels[:pb])
                img = G.synthesis(ws)
                pl_noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
                pl_out = (img * pl_noise).sum()
            grad = amp.grad(pl_out, ws)
            lengths = grad.square().sum(2).mean(1).sqrt()
            with torch.no_grad():
                # under 16-mixed an overflowing (skipped) step must not poison the running mean
                new_mean = self.pl_mean.lerp(lengths.mean().float(), self.pl_decay)
                self.pl_mean.copy_(torch.where(torch.isfinite(new_mean), new_mean, self.pl_mean))
            pl = (lengths - self.pl_mean).square().mean()
            out["pl"] = float(pl.detach())
            loss_g = loss_g + pl * self.pl_weight * self.pl_interval
        opt_g.zero_grad(set_to_none=True)
        amp.backward(loss_g)
        amp.step(opt_g)

        # --- D: logistic loss (+ lazy R1 on reals) ---
        D.requires_grad_(True)
        with torch.no_grad(), amp.autocast():
            fake = G.synthesis(self._ws(torch.randn(b, self.latent_dim, device=dev), labels))
        do_r1 = self.r1_gamma > 0 and step % self.r1_interval == 0
        real_in = real.detach().requires_grad_(do_r1)
        with amp.autocast():
            real_logits = D(self._augment(real_in), labels)
            fake_logits = D(self._augment(fake), labels)
            loss_d = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        out["loss_d"] = float(loss_d.detach())
        if do_r1:
            r1 = r1_penalty(real_logits, real_in, amp=amp)
            out["r1"] = float(r1.detach())
            loss_d = loss_d + r1 * (self.r1_gamma / 2) * self.r1_interval
        opt_d.zero_grad(set_to_none=True)
        amp.backward(loss_d)
        amp.step(opt_d)

        # --- ADA: adjust p from the sign of D on reals ---
        if self.ada is not None:
            self.ada.accumulate(real_logits)
            if (step + 1) % self.ada_interval == 0:
                out["ada_rt"] = self.ada.update(b * self.ada_interval)
            out["ada_p"] = float(self.ada.p)
        return out

    def _generate(self, net, z, labels, masks, noise_seeds):
        """Per-sample noise maps from per-sample seeds, so a sample does not depend on its chunk."""
        per_sample = []
        for s in noise_seeds.tolist():
            g = torch.Generator().manual_seed(int(s))
            per_sample.append([torch.randn(1, 1, h, w, generator=g) for h, w in net.synthesis.noise_shapes()])
        noise = [torch.cat(maps).to(z.device) for maps in zip(*per_sample)]
        return net(z, labels, truncation_psi=self.truncation_psi, noise=noise)

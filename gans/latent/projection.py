"""Projection (GAN inversion): the latent code whose generated image is closest to a given real image.

For each target image, a latent is optimised with Adam to minimise ``feature_weight * feature_loss(G(latent),
target) + pixel_weight * mse(G(latent), target)`` (image channels only; an image+mask model's mask comes out of the
same latent). Spaces: z for every GAN, w or w+ for style-based generators (StyleGAN2's projector optimises w, with
LPIPS-VGG16 as the feature loss; the dermatology study §4.3 did the same with a VGG16 feature loss).

Initialisation: z from a per-image seeded N(0, I) draw; w / w+ at the mean of the mapping network's output over
``w_avg_samples`` seeded draws (per class for conditional models). Noise maps of StyleGAN come from per-image seeds
and stay fixed. The learning rate follows the StyleGAN2 projector's schedule (linear ramp-up over the first
``lr_rampup`` of the steps, cosine ramp-down over the last ``lr_rampdown``).

Determinism: everything a projection draws comes from ``seed`` and the image's index in the whole set, and the loss
of one image does not depend on the others in its batch; so a projection is the same on a rerun, and the same whether
it runs in one go or in resumed chunks (:func:`project_chunked`, which saves each finished chunk atomically and
reuses the chunks whose settings, targets and generator weights match).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from medsynbench.gans.latent.losses import pixel_loss
from medsynbench.gans.latent.space import (Latents, generator, noise_seeds_for, resolve_space, split_output,
                                           synthesize)
from medsynbench.io import array_hash, atomic_torch_save, content_hash

log = logging.getLogger(__name__)


@dataclass
class ProjectionSettings:
    space: str = "auto"            # auto (w for style-based, else z) | z | w | w+
    steps: int = 200               # optimisation steps per image
    lr: float = 0.05               # Adam learning rate (peak of the schedule)
    betas: tuple = (0.9, 0.999)
    feature_weight: float = 1.0    # weight of the feature distance
    pixel_weight: float = 0.0      # weight of the mean squared pixel difference ([-1, 1] scale)
    batch_size: int = 16           # images optimised together (independently: results do not depend on it)
    seed: int = 0
    w_avg_samples: int = 1000      # draws for the mean w that w / w+ start from
    lr_rampup: float = 0.05        # fraction of the steps of linear lr ramp-up
    lr_rampdown: float = 0.25      # fraction of the steps of cosine lr ramp-down

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"projection steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"projection lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"projection batch_size must be >= 1, got {self.batch_size}")
        if self.feature_weight < 0 or self.pixel_weight < 0 or self.feature_weight + self.pixel_weight == 0:
            raise ValueError("projection needs feature_weight and/or pixel_weight > 0 (both >= 0)")
        self.betas = tuple(float(b) for b in self.betas)


def lr_at(step: int, settings: ProjectionSettings) -> float:
    """The StyleGAN2 projector's learning-rate schedule."""
    t = step / settings.steps
    ramp = min(1.0, (1.0 - t) / settings.lr_rampdown) if settings.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if settings.lr_rampup > 0:
        ramp *= min(1.0, (t + 1.0 / settings.steps) / settings.lr_rampup)
    return settings.lr * ramp


@torch.no_grad()
def mean_w(gan, n_samples: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean mapping output over ``n_samples`` seeded z draws ([w_dim]); with ``labels`` [B]: one mean per label
    ([B, w_dim], the same draws for every class)."""
    net = generator(gan)
    device = next(net.parameters()).device
    z = torch.randn(n_samples, gan.latent_dim, generator=torch.Generator().manual_seed(int(seed) + 7919)).to(device)
    psi = getattr(gan, "truncation_psi", 1.0)
    if labels is None:
        return net.mapping(z, None, truncation_psi=psi).mean(0).cpu()
    means = {}
    for c in sorted(set(labels.tolist())):
        means[c] = net.mapping(z, torch.full((n_samples,), c, dtype=torch.long, device=device),
                               truncation_psi=psi).mean(0).cpu()
    return torch.stack([means[c] for c in labels.tolist()])


def initial_latents(gan, n: int, settings: ProjectionSettings, offset: int = 0, labels=None, masks=None) -> Latents:
    """Starting latents of images ``offset .. offset + n - 1`` (functions of the seed and the image index only)."""
    space = resolve_space(gan, settings.space)
    labels = None if labels is None else torch.as_tensor(labels).long()
    if gan.num_classes and labels is None:
        raise ValueError(f"{gan.name} is class-conditional: projection needs the target images' labels")
    if getattr(gan, "takes_masks", False) and masks is None:
        raise ValueError(f"{gan.name} is mask-conditioned: projection needs the target images' masks")
    if space == "z":
        code = torch.stack([torch.randn(gan.latent_dim, generator=torch.Generator().manual_seed(
            int(settings.seed) * 1_000_003 + offset + i)) for i in range(n)]) if n else torch.zeros(0, gan.latent_dim)
    else:
        w = mean_w(gan, settings.w_avg_samples, settings.seed, labels)
        code = w.expand(n, -1).clone() if w.ndim == 1 else w.clone()
        if space == "w+":
            code = code.unsqueeze(1).repeat(1, generator(gan).num_ws, 1)
    return Latents(code, space, labels, None if masks is None else torch.as_tensor(masks).long(),
                   noise_seeds_for(n, settings.seed, offset))


def project(gan, targets: torch.Tensor, feature_loss: Callable | None, settings: ProjectionSettings,
            labels=None, masks=None, offset: int = 0, progress: Callable[[int], None] | None = None) -> dict:
    """Project ``targets`` ([N, C, H, W] in [-1, 1], the model's image channels) into ``gan``'s latent space.

    Returns CPU tensors: ``latents`` (:class:`Latents`), ``images`` / ``masks`` (the projections), ``loss_curve``
    [N, steps] (the total loss of each image at each step, before that step's update), ``final_loss``,
    ``final_feature_loss`` and ``final_pixel_loss`` [N] (of the returned latents). ``offset``: index of the first
    target in the whole set (seeds are per global index). ``progress(k)`` is called after each batch of k images."""
    targets = torch.as_tensor(targets).float()
    if targets.ndim != 4 or targets.shape[1] != gan.image_channels or targets.shape[-1] != gan.image_size:
        raise ValueError(f"{gan.name}: targets must be [N, {gan.image_channels}, {gan.image_size}, "
                         f"{gan.image_size}] images, got {tuple(targets.shape)}")
    if settings.feature_weight > 0 and feature_loss is None:
        raise ValueError("feature_weight > 0 needs a feature loss")
    init = initial_latents(gan, len(targets), settings, offset, labels, masks)
    net = generator(gan)
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out_codes, curves, finals = [], [], {"total": [], "feature": [], "pixel": []}
    images, out_masks = [], []

    def losses(lat: Latents, target: torch.Tensor):
        fake = synthesize(gan, lat)[:, :gan.image_channels]
        feat = feature_loss(fake, target) if settings.feature_weight > 0 else fake.new_zeros(len(fake))
        pix = pixel_loss(fake, target) if settings.pixel_weight > 0 else fake.new_zeros(len(fake))
        return settings.feature_weight * feat + settings.pixel_weight * pix, feat, pix

    try:
        with torch.enable_grad():
            for s in range(0, len(targets), settings.batch_size):
                sl = slice(s, s + settings.batch_size)
                lat = init.subset(sl)
                target = targets[sl].to(device)
                code = lat.code.clone().to(device).requires_grad_(True)
                opt = torch.optim.Adam([code], lr=settings.lr, betas=settings.betas)
                curve = torch.empty(len(code), settings.steps)
                for step in range(settings.steps):
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step, settings)
                    total, _, _ = losses(lat.with_code(code), target)
                    curve[:, step] = total.detach().float().cpu()
                    opt.zero_grad(set_to_none=True)
                    total.sum().backward()  # per-image losses are independent: the sum's gradient is per image
                    opt.step()
                final = lat.with_code(code.detach())
                with torch.no_grad():
                    total, feat, pix = losses(final, target)
                    img, msk = split_output(gan, synthesize(gan, final).cpu())
                out_codes.append(code.detach().cpu())
                curves.append(curve)
                for key, value in (("total", total), ("feature", feat), ("pixel", pix)):
                    finals[key].append(value.detach().float().cpu())
                images.append(img)
                if msk is not None:
                    out_masks.append(msk)
                if progress is not None:
                    progress(len(code))
    finally:
        net.train(was_training)
    latents = init.with_code(torch.cat(out_codes) if out_codes else init.code)
    result = {"latents": latents, "images": torch.cat(images) if images else targets[:0],
              "loss_curve": torch.cat(curves) if curves else torch.zeros(0, settings.steps),
              "final_loss": _cat(finals["total"]), "final_feature_loss": _cat(finals["feature"]),
              "final_pixel_loss": _cat(finals["pixel"])}
    if out_masks:
        result["masks"] = torch.cat(out_masks).long()
    elif latents.masks is not None:
        result["masks"] = latents.masks
    return result


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0)


def generator_digest(gan) -> str:
    """Content hash of the sampled generator's weights (a chunk projected by other weights is never reused)."""
    state = generator(gan).state_dict()
    return array_hash(*(state[k] for k in sorted(state)))


def project_chunked(gan, targets: torch.Tensor, feature_loss: Callable | None, settings: ProjectionSettings,
                    chunk_dir: str | Path, chunk_size: int = 64, labels=None, masks=None, loss_key: dict | None = None,
                    progress: Callable[[int], None] | None = None) -> dict:
    """:func:`project` in chunks of ``chunk_size`` images, each saved to ``chunk_dir/chunk_<k>.pt`` when done; a
    rerun (after a kill, or with more images) reuses every chunk whose key (settings, the feature loss's
    ``loss_key``, generator weights, the chunk's targets, labels and masks) matches and projects only the rest.
    Returns what :func:`project` returns for all targets, plus ``reused_chunks`` and ``projected_chunks``."""
    chunk_dir = Path(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    targets = torch.as_tensor(targets).float()
    labels = None if labels is None else torch.as_tensor(labels).long()
    masks = None if masks is None else torch.as_tensor(masks).long()
    base_key = {"settings": asdict(settings), "loss": loss_key or {}, "generator": generator_digest(gan),
                "chunk_size": int(chunk_size)}
    parts, reused, projected = [], 0, 0
    for k, s in enumerate(range(0, len(targets), chunk_size)):
        sl = slice(s, s + chunk_size)
        key = content_hash({**base_key, "offset": s, "targets": array_hash(targets[sl]),
                            "labels": None if labels is None else array_hash(labels[sl]),
                            "masks": None if masks is None else array_hash(masks[sl])})
        path = chunk_dir / f"chunk_{k:05d}.pt"
        part = None
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                part = saved["result"] if saved.get("key") == key else None
            except Exception as err:  # a corrupt chunk (e.g. from another version) is projected again
                log.warning("projection chunk %s unreadable (%s); projecting it again", path, err)
        if part is None:
            res = project(gan, targets[sl], feature_loss, settings, None if labels is None else labels[sl],
                          None if masks is None else masks[sl], offset=s, progress=progress)
            part = _to_plain(res)
            atomic_torch_save({"key": key, "result": part}, path)
            projected += 1
        else:
            reused += 1
            if progress is not None:
                progress(len(part["images"]))
        parts.append(part)
    out = _merge(parts, settings, gan)
    out.update(reused_chunks=reused, projected_chunks=projected)
    return out


def _to_plain(res: dict) -> dict:
    """A projection result as tensors and strings only (loads with ``weights_only=True``)."""
    lat = res["latents"]
    plain = {k: v for k, v in res.items() if k != "latents"}
    plain.update(code=lat.code, space=lat.space, labels=lat.labels, latent_masks=lat.masks,
                 noise_seeds=lat.noise_seeds)
    return plain


def _merge(parts: list[dict], settings: ProjectionSettings, gan) -> dict:
    def cat(key):
        vals = [p[key] for p in parts if p.get(key) is not None]
        return torch.cat(vals) if vals and len(vals) == len(parts) else None

    space = parts[0]["space"] if parts else resolve_space(gan, settings.space)
    latents = Latents(cat("code"), space, cat("labels"), cat("latent_masks"), cat("noise_seeds"))
    out = {"latents": latents, "images": cat("images"), "loss_curve": cat("loss_curve"),
           "final_loss": cat("final_loss"), "final_feature_loss": cat("final_feature_loss"),
           "final_pixel_loss": cat("final_pixel_loss")}
    if cat("masks") is not None:
        out["masks"] = cat("masks")
    return out

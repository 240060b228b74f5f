"""The latent spaces of a zoo GAN and a differentiable synthesis from them.

Every GAN of the zoo has a z space (``GAN._generate(net, z, labels, masks, noise_seeds)``); style-based generators
(a ``mapping`` and a ``synthesis`` network, gans/stylegan2.py) also have w (one style vector, broadcast to every
layer) and w+ (one style vector per layer). :func:`synthesize` maps a latent of any of these spaces to the model's
output, image and (for image+mask models) mask channels together, so an edited image keeps its mask aligned: the mask
is part of the generated output. Per-sample noise maps come from per-sample seeds exactly as in ``GAN.sample``, so a
latent drawn by :func:`seed_latents` synthesises the very image ``gan.sample(n, seed)`` returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from medsynbench.gans.pairs import split_pair

SPACES = ("auto", "z", "w", "w+")


def generator(gan, ema: bool = True):
    """The network that is sampled (``g_ema`` by default)."""
    return gan.g_ema if ema else gan.generator


def is_style_based(gan) -> bool:
    net = generator(gan)
    return hasattr(net, "mapping") and hasattr(net, "synthesis")


def resolve_space(gan, space: str) -> str:
    """``auto`` = w for style-based generators, z otherwise; w / w+ on a generator without a mapping network is an
    error naming the model."""
    if space not in SPACES:
        raise ValueError(f"latent space must be one of {SPACES}, got {space!r}")
    if space == "auto":
        return "w" if is_style_based(gan) else "z"
    if space in ("w", "w+") and not is_style_based(gan):
        raise ValueError(f"latent space {space!r} needs a style-based generator (mapping + synthesis networks); "
                         f"{gan.name} ({type(gan).__name__}) has only z: use space=z or auto")
    return space


@dataclass
class Latents:
    """What determines a generated sample besides the weights: the latent code (z [B, latent_dim], w [B, w_dim] or
    w+ [B, num_ws, w_dim]), class labels, conditioning masks (SPADE) and per-sample noise seeds."""

    code: torch.Tensor
    space: str
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    noise_seeds: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.code.shape[0]

    def subset(self, sl) -> "Latents":
        pick = (lambda t: None if t is None else t[sl])
        return Latents(self.code[sl], self.space, pick(self.labels), pick(self.masks), pick(self.noise_seeds))

    def with_code(self, code: torch.Tensor) -> "Latents":
        return Latents(code, self.space, self.labels, self.masks, self.noise_seeds)


def noise_seeds_for(n: int, seed: int, offset: int = 0) -> torch.Tensor:
    """Per-sample noise seeds of samples ``offset .. offset + n - 1`` of a seeded set (independent of chunking)."""
    return torch.tensor([(int(seed) * 1_000_003 + offset + i) % (2 ** 62) for i in range(n)], dtype=torch.long)


def seed_latents(gan, n: int, seed: int, labels=None, masks=None) -> Latents:
    """The z, labels, masks and noise seeds ``gan.sample(n, seed)`` draws (the same private generator, same order)."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, gan.latent_dim, generator=gen)
    noise_seeds = torch.randint(0, 2 ** 62, (n,), generator=gen)
    if labels is None:
        labels = gan._sample_labels(n, gen)
    if masks is None:
        masks = gan._sample_masks(n, gen)
    return Latents(z, "z", None if labels is None else torch.as_tensor(labels).long(),
                   None if masks is None else torch.as_tensor(masks).long(), noise_seeds)


def _noise_maps(net, noise_seeds: torch.Tensor, device) -> list[torch.Tensor]:
    """StyleGAN noise maps from per-sample seeds, as ``StyleGAN2._generate`` draws them."""
    per_sample = []
    for s in noise_seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        per_sample.append([torch.randn(1, 1, h, w, generator=g) for h, w in net.synthesis.noise_shapes()])
    return [torch.cat(maps).to(device) for maps in zip(*per_sample)]


def to_w(gan, latents: Latents, plus: bool = False) -> Latents:
    """z -> w (or w+) through the mapping network (with the model's truncation), for edits in w space."""
    if latents.space != "z":
        raise ValueError(f"to_w maps z latents, got {latents.space!r}")
    net = generator(gan)
    device = next(net.parameters()).device
    with torch.no_grad():
        w = net.mapping(latents.code.to(device), None if latents.labels is None else latents.labels.to(device),
                        truncation_psi=getattr(gan, "truncation_psi", 1.0))
    if plus:
        w = w.unsqueeze(1).repeat(1, net.num_ws, 1)
    return Latents(w, "w+" if plus else "w", latents.labels, latents.masks, latents.noise_seeds)


def synthesize(gan, latents: Latents, ema: bool = True) -> torch.Tensor:
    """The model's data tensor (image [+ one-hot mask channels], unclamped) for ``latents``, differentiable in the
    latent code (generator weights are not changed). Batch-independent: the generator runs in eval mode."""
    net = generator(gan, ema)
    device = next(net.parameters()).device
    code = latents.code.to(device)
    labels = None if latents.labels is None else latents.labels.to(device)
    masks = None if latents.masks is None else latents.masks.to(device)
    seeds = latents.noise_seeds if latents.noise_seeds is not None else torch.zeros(len(code), dtype=torch.long)
    if latents.space == "z":
        return gan._generate(net, code, labels, masks, seeds)
    if not is_style_based(gan):
        raise ValueError(f"{gan.name}: {latents.space} latents need a style-based generator")
    ws = code.unsqueeze(1).expand(-1, net.num_ws, -1) if latents.space == "w" else code
    if ws.ndim != 3 or ws.shape[1] != net.num_ws:
        raise ValueError(f"w+ latents must be [B, {net.num_ws}, w_dim], got {tuple(code.shape)}")
    return net.synthesis(ws, _noise_maps(net, seeds, device))


def split_output(gan, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images clamped to [-1, 1], masks [B, H, W] int64 or None) of a data tensor, as ``GAN.sample`` returns them."""
    x = x.float().clamp(-1, 1)
    return split_pair(x, gan.image_channels, gan.num_mask_classes if x.shape[1] > gan.image_channels else 0)


@torch.no_grad()
def render(gan, latents: Latents, batch_size: int = 64) -> dict:
    """Images (and masks of image+mask models, or the conditioning masks of SPADE) of ``latents`` as CPU tensors."""
    net = generator(gan)
    was_training = net.training
    net.eval()
    images, masks = [], []
    try:
        for s in range(0, len(latents), batch_size):
            img, msk = split_output(gan, synthesize(gan, latents.subset(slice(s, s + batch_size))).cpu())
            images.append(img)
            if msk is not None:
                masks.append(msk)
    finally:
        net.train(was_training)
    out = {"images": torch.cat(images)}
    if masks:
        out["masks"] = torch.cat(masks).long()
    elif latents.masks is not None:
        out["masks"] = latents.masks.cpu()
    return out

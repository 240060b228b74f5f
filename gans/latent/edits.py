"""Edits along latent directions and latent walks (between seeds, across class conditions).

Every function returns what :func:`medsynbench.gans.latent.space.render` returns: images [N, C, H, W] in [-1, 1]
and, for image+mask models, the masks generated from the same latent (so an edited lesion keeps its own mask), or for
mask-conditioned models (SPADE) the conditioning masks. An edit of strength 0 is the unedited sample itself, which for
seeded latents is exactly ``gan.sample(n, seed)``.
"""
from __future__ import annotations

import torch

from medsynbench.gans.latent.space import Latents, is_style_based, render, seed_latents, to_w


def base_latents(gan, n: int, seed: int, space: str) -> Latents:
    """The latents of ``gan.sample(n, seed)`` in ``space`` ('z', or 'w' / 'w+' through the mapping network)."""
    lat = seed_latents(gan, n, seed)
    return lat if space == "z" else to_w(gan, lat, plus=space == "w+")


def edit(latents: Latents, direction: torch.Tensor, strength: float) -> Latents:
    """``latents`` moved by ``strength`` along ``direction`` ([dim]; for w+ latents it moves every layer)."""
    d = torch.as_tensor(direction, dtype=latents.code.dtype).to(latents.code.device)
    if d.ndim != 1 or d.shape[0] != latents.code.shape[-1]:
        raise ValueError(f"direction must be a [{latents.code.shape[-1]}] vector, got {tuple(d.shape)}")
    if strength == 0:
        return latents
    return latents.with_code(latents.code + float(strength) * d)


def edit_grid(gan, directions: torch.Tensor, strengths, seed: int, n_seeds: int = 1, space: str = "z",
              batch_size: int = 64) -> dict:
    """Images (and masks) of ``n_seeds`` seeded samples moved along each direction at each strength.

    Returns ``images`` [n_dirs, n_seeds, n_strengths, C, H, W] (``masks`` [..., H, W] when the model has masks),
    ``strengths`` and ``space``."""
    directions = torch.as_tensor(directions).float()
    strengths = [float(s) for s in strengths]
    base = base_latents(gan, n_seeds, seed, space)
    frames = []
    for d in directions:
        for s in strengths:
            frames.append(edit(base, d, s))
    stacked = Latents(torch.cat([f.code for f in frames]), base.space,
                      None if base.labels is None else base.labels.repeat(len(frames)),
                      None if base.masks is None else base.masks.repeat(len(frames), 1, 1),
                      base.noise_seeds.repeat(len(frames)))
    out = render(gan, stacked, batch_size)
    shape = (len(directions), len(strengths), n_seeds)
    result = {"images": out["images"].reshape(*shape, *out["images"].shape[1:]).transpose(1, 2),
              "strengths": strengths, "space": space}
    if "masks" in out:
        result["masks"] = out["masks"].reshape(*shape, *out["masks"].shape[1:]).transpose(1, 2)
    return result


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of Gaussian latents (keeps their norm typical); linear where they are parallel."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = (an * bn).sum(-1, keepdim=True).clamp(-1, 1).acos()
    so = torch.sin(omega)
    lin = (1 - t) * a + t * b
    return torch.where(so.abs() < 1e-6, lin, (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so)


def seed_walk(gan, seed_a: int, seed_b: int, n_frames: int = 8, space: str | None = None) -> dict:
    """Frames from ``gan.sample(1, seed_a)`` to ``gan.sample(1, seed_b)``: slerp in z, or lerp in w for style-based
    generators (``space='w'``). Labels, masks and noise are those of seed a throughout."""
    space = space or ("w" if is_style_based(gan) else "z")
    a, b = base_latents(gan, 1, seed_a, space), base_latents(gan, 1, seed_b, space)
    ts = torch.linspace(0, 1, n_frames).tolist()
    codes = [(slerp(a.code, b.code, t) if space == "z" else a.code.lerp(b.code, t)) for t in ts]
    lat = Latents(torch.cat(codes), a.space, None if a.labels is None else a.labels.repeat(n_frames),
                  None if a.masks is None else a.masks.repeat(n_frames, 1, 1), a.noise_seeds.repeat(n_frames))
    return {**render(gan, lat), "t": ts}


def class_walk(gan, seed: int, n_frames: int = 5) -> dict:
    """One seeded latent shown under every class condition, with ``n_frames`` frames between consecutive classes
    (style-based: lerp between the class-conditioned w's; otherwise one frame per class, the label being discrete).
    Returns the rendered frames and ``labels`` (the class, or the pair of classes, of each frame)."""
    if not gan.num_classes:
        raise ValueError(f"{gan.name} is unconditional: there are no class conditions to walk across")
    z = seed_latents(gan, 1, seed)
    per_class = [Latents(z.code, "z", torch.tensor([c]), z.masks, z.noise_seeds) for c in range(gan.num_classes)]
    if not is_style_based(gan):
        lat = Latents(torch.cat([p.code for p in per_class]), "z", torch.arange(gan.num_classes),
                      None if z.masks is None else z.masks.repeat(gan.num_classes, 1, 1),
                      z.noise_seeds.repeat(gan.num_classes))
        return {**render(gan, lat), "labels": [str(c) for c in range(gan.num_classes)]}
    ws = [to_w(gan, p) for p in per_class]
    codes, names = [], []
    for c in range(gan.num_classes - 1):
        for t in torch.linspace(0, 1, n_frames).tolist()[:-1]:
            codes.append(ws[c].code.lerp(ws[c + 1].code, t))
            names.append(f"{c}->{c + 1} t={t:.2f}")
    codes.append(ws[-1].code)
    names.append(str(gan.num_classes - 1))
    n = len(codes)
    lat = Latents(torch.cat(codes), "w", None, None if z.masks is None else z.masks.repeat(n, 1, 1),
                  z.noise_seeds.repeat(n))
    return {**render(gan, lat), "labels": names}

"""Memorisation / authenticity: is a synthetic sample closer to a training image than training images are to
each other?

Per synthetic sample s with nearest training image t: ratio = d(s, t) / d(t, nearest other training image).
A ratio well below 1 means s sits closer to t than t's own neighbourhood spacing: a likely copy. Distances are
Euclidean on flattened pixels by default (or on any features passed in), computed in chunks.
"""
from __future__ import annotations

import numpy as np
import torch

from medsynbench.metrics.prdc import _sq_dists


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    return x.reshape(len(x), -1).double()


def nearest(query: torch.Tensor, ref: torch.Tensor, chunk: int = 512, exclude_self: bool = False):
    """Distance to and index of each query row's nearest ref row (optionally skipping the identical index)."""
    ref_sq = (ref * ref).sum(1)
    dist = torch.empty(len(query), dtype=torch.float64)
    idx = torch.empty(len(query), dtype=torch.long)
    for s in range(0, len(query), chunk):
        d = _sq_dists(query[s:s + chunk], ref, ref_sq)
        if exclude_self:
            rows = torch.arange(s, min(s + chunk, len(query)))
            d[rows - s, rows] = float("inf")
        v, i = d.min(1)
        dist[s:s + chunk], idx[s:s + chunk] = v.sqrt(), i
    return dist, idx


def memorisation_ratios(fake, train, chunk: int = 512) -> dict:
    """Per-synthetic-sample nearest-training distance, index and ratio to that training image's own NN distance."""
    f, t = _flat(fake), _flat(train)
    if len(t) < 2:
        raise ValueError(f"memorisation needs at least 2 training images, got {len(t)}")
    d_ft, nn = nearest(f, t, chunk)
    d_tt, _ = nearest(t, t, chunk, exclude_self=True)
    ratio = d_ft / d_tt[nn].clamp_min(1e-12)
    return {"distance": d_ft.numpy(), "nearest_train": nn.numpy(), "ratio": ratio.numpy()}


def closest_pairs_grid(fake, train, n: int = 8, path: str | None = None):
    """Image grid of the n synthetic samples closest to a training image: row pairs (synthetic | its training NN).

    Returns the [2n, C, H, W] tensor (synthetic, training interleaved); saves a PNG when ``path`` is given.
    """
    import torchvision.utils as vutils
    info = memorisation_ratios(fake, train)
    order = np.argsort(info["ratio"])[:n]
    fake_t, train_t = torch.as_tensor(fake), torch.as_tensor(train)
    pairs = torch.stack([torch.stack([fake_t[i], train_t[info["nearest_train"][i]]]) for i in order]).flatten(0, 1)
    if path:
        vutils.save_image((pairs + 1) / 2, path, nrow=2, padding=2)
    return pairs

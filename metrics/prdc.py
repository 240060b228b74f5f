"""Improved precision/recall (Kynkäänniemi et al.) and density/coverage (Naeem et al. 2020) on k-NN manifolds.

The neighbour search is chunked in torch (float64 by default, so borderline comparisons match the reference
exactly): only a [chunk, N] block of squared distances exists at a time, so N = 10,000 at d = 2048 stays well
under 1.5 GB, where prdc builds three full N×N matrices. Comparison is strict (``<``) like prdc.
"""
from __future__ import annotations

import numpy as np
import torch

from medsynbench.metrics.registry import register_metric


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) + b_sq[None, :] - 2 * (a @ b.T)
    return d.clamp_min_(0)


def knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest other row (the row itself is the 0-th neighbour)."""
    if len(x) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(x)}")
    x_sq = (x * x).sum(1)
    out = torch.empty(len(x), dtype=x.dtype)
    for s in range(0, len(x), chunk):
        d = _sq_dists(x[s:s + chunk], x, x_sq)
        out[s:s + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def prdc_per_sample(real_feats, fake_feats, k: int = 3, chunk: int = 1024, dtype=torch.float64) -> dict:
    """Per-sample indicators/counts; the set-level metrics are their means (used by the bootstrap too)."""
    real = torch.as_tensor(np.asarray(real_feats), dtype=dtype)
    fake = torch.as_tensor(np.asarray(fake_feats), dtype=dtype)
    r_rad, f_rad = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)
    fake_sq = (fake * fake).sum(1)
    in_real_balls = torch.zeros(len(fake), dtype=torch.long)   # per fake: how many real balls contain it
    recall_hit = torch.zeros(len(real), dtype=torch.bool)      # per real: inside some fake ball
    coverage_hit = torch.zeros(len(real), dtype=torch.bool)    # per real: nearest fake inside its own ball
    for s in range(0, len(real), chunk):
        d = _sq_dists(real[s:s + chunk], fake, fake_sq)        # [chunk real, n fake]
        inside = d < r_rad[s:s + chunk, None]
        in_real_balls += inside.sum(0)
        recall_hit[s:s + chunk] = (d < f_rad[None, :]).any(1)
        coverage_hit[s:s + chunk] = d.min(1).values < r_rad[s:s + chunk]
    return {"precision": (in_real_balls > 0).double().numpy(), "density": in_real_balls.double().numpy() / k,
            "recall": recall_hit.double().numpy(), "coverage": coverage_hit.double().numpy()}


def prdc(real_feats, fake_feats, k: int = 3, chunk: int = 1024) -> dict[str, float]:
    per = prdc_per_sample(real_feats, fake_feats, k=k, chunk=chunk)
    return {name: float(v.mean()) for name, v in per.items()}


def _make(name: str, doc: str):
    def fn(real_feats, fake_feats, k: int = 3, chunk: int = 1024, _prdc_cache: dict | None = None, **_) -> dict:
        per = _cached(real_feats, fake_feats, k, chunk, _prdc_cache)
        return {"value": float(per[name].mean()), "k": k}
    fn.__doc__ = doc
    fn.__name__ = f"{name}_metric"
    return fn


def _cached(real_feats, fake_feats, k, chunk, cache):
    """The four metrics share one neighbour search; compute_feature_metrics passes a dict to share it."""
    if cache is None:
        return prdc_per_sample(real_feats, fake_feats, k=k, chunk=chunk)
    key = (id(real_feats), id(fake_feats), k)
    if key not in cache:
        cache[key] = prdc_per_sample(real_feats, fake_feats, k=k, chunk=chunk)
    return cache[key]


for _name, _hib, _doc in [
    ("precision", True, "Improved precision: fraction of synthetic samples inside the real k-NN manifold."),
    ("recall", True, "Improved recall: fraction of real samples inside the synthetic k-NN manifold."),
    ("density", True, "Density: mean count of real k-NN balls containing each synthetic sample, divided by k."),
    ("coverage", True, "Coverage: fraction of real samples whose k-NN ball contains a synthetic sample."),
]:
    register_metric(_name, higher_is_better=_hib)(_make(_name, _doc))

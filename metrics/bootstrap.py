"""Seeded percentile bootstrap confidence intervals for Fréchet distance, KID and precision/recall/density/coverage.

FD and KID resample both feature sets with replacement and recompute the metric. Precision, recall, density and
coverage resample the per-sample indicators for fixed k-NN manifolds ("conditional" bootstrap): resampling the
manifold points themselves would create duplicates whose zero-distance neighbours shrink the k-NN radii and bias
the metric, so the interval describes the uncertainty of the average over the evaluated samples.
"""
from __future__ import annotations

import numpy as np

from medsynbench.metrics.frechet import frechet_distance
from medsynbench.metrics.kid import draw_subsets, mmd2_subsets
from medsynbench.metrics.prdc import _cached

SUPPORTED = ("fd", "kid", "precision", "recall", "density", "coverage")


def _percentiles(values, ci):
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(np.asarray(values), [alpha, 1 - alpha])
    return float(lo), float(hi)


def confidence_interval(name: str, real: np.ndarray, fake: np.ndarray, params: dict, n_boot: int, ci: float,
                        seed: int, kid_subsets: int = 10) -> tuple[float, float, str]:
    rng = np.random.default_rng([seed, 7919])
    if name in ("precision", "recall", "density", "coverage"):
        per = _cached(real, fake, params["k"], params["chunk"], params.get("_prdc_cache"))[name]
        idx = rng.integers(0, len(per), size=(n_boot, len(per)))
        return (*_percentiles(per[idx].mean(1), ci), "percentile, per-sample indicators, fixed k-NN manifolds")
    if name == "kid":
        return (*_percentiles(_kid_replicates(real, fake, params, n_boot, seed, kid_subsets, rng), ci),
                f"percentile, both sets resampled with replacement, {kid_subsets} subsets per replicate")
    values = []
    for b in range(n_boot):
        r = real[rng.integers(0, len(real), len(real))]
        f = fake[rng.integers(0, len(fake), len(fake))]
        values.append(frechet_distance(r, f))
    return (*_percentiles(values, ci), "percentile, both sets resampled with replacement")


def _kid_replicates(real, fake, params, n_boot, seed, kid_subsets, rng) -> np.ndarray:
    """Mean KID of each bootstrap replicate. A replicate's subsets are multisets of the original rows (resample
    indices composed with subset indices), so all n_boot × kid_subsets subsets go through one
    :func:`mmd2_subsets` call, which forms the kernel matrix of the original rows at most once."""
    real_idx, fake_idx = [], []
    m = min(params["kid_subset_size"], len(real), len(fake))
    for b in range(n_boot):
        r = rng.integers(0, len(real), len(real))
        f = rng.integers(0, len(fake), len(fake))
        ri, fi = draw_subsets(len(r), len(f), kid_subsets, m, seed + 1 + b)
        real_idx += [r[i] for i in ri]
        fake_idx += [f[i] for i in fi]
    values, _ = mmd2_subsets(real, fake, real_idx, fake_idx, params.get("kid_precision", "mixed"))
    return values.reshape(n_boot, kid_subsets).mean(1)

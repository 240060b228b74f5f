"""Seeded percentile bootstrap confidence intervals for Fréchet distance, KID and precision/recall/density/coverage.

FD and KID resample both feature sets with replacement and recompute the metric. Precision, recall, density and
coverage resample the per-sample indicators for fixed k-NN manifolds ("conditional" bootstrap): resampling the
manifold points themselves would create duplicates whose zero-distance neighbours shrink the k-NN radii and bias
the metric, so the interval describes the uncertainty of the average over the evaluated samples.
"""
from __future__ import annotations

import numpy as np

from metrics.frechet import frechet_distance
from metrics.kid import kid_subset_values
from metrics.prdc import _cached

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
    values = []
    for b in range(n_boot):
        r = real[rng.integers(0, len(real), len(real))]
        f = fake[rng.integers(0, len(fake), len(fake))]
        if name == "fd":
            values.append(frechet_distance(r, f))
        else:
            v, _ = kid_subset_values(r, f, kid_subsets, params["kid_subset_size"], seed + 1 + b)
            values.append(v.mean())
    method = "percentile, both sets resampled with replacement"
    if name == "kid":
        method += f", {kid_subsets} subsets per replicate"
    return (*_percentiles(values, ci), method)

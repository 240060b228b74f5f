"""Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³.

Subsets are drawn exactly as torch-fidelity draws them with ``rng_seed=seed`` (``np.random.RandomState(seed)``,
then per subset ``choice(n_real, m)`` and ``choice(n_fake, m)`` without replacement), so a seeded value here can be
reproduced by that library as ``kid_features_to_metric(real, fake, rng_seed=seed)``; the subset size is capped by both sample counts and recorded.
"""
from __future__ import annotations

import numpy as np
import torch

from metrics.registry import register_metric


def poly_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² (diagonals of Kxx, Kyy excluded; Kxy full) with the cubic polynomial kernel."""
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid_subset_values(real_feats, fake_feats, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                dtype=torch.float64) -> tuple[np.ndarray, int]:
    """Per-subset MMD² values and the subset size actually used (capped by the sample counts)."""
    real = torch.as_tensor(np.asarray(real_feats), dtype=dtype)
    fake = torch.as_tensor(np.asarray(fake_feats), dtype=dtype)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} synthetic")
    rng = np.random.RandomState(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        r = real[torch.from_numpy(rng.choice(len(real), m, replace=False))]
        f = fake[torch.from_numpy(rng.choice(len(fake), m, replace=False))]
        values[i] = poly_mmd2(r, f)
    return values, m


@register_metric("kid", higher_is_better=False)
def kid_metric(real_feats, fake_feats, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
               **_) -> dict:
    """KID: mean unbiased poly-kernel MMD² over seeded random subsets."""
    values, m = kid_subset_values(real_feats, fake_feats, kid_subsets, kid_subset_size, seed)
    warning = None
    if m < kid_subset_size:
        warning = f"KID subset size capped at {m} by the sample counts (requested {kid_subset_size})"
    return {"value": float(values.mean()), "std": float(values.std()), "subset_size": m,
            "subsets": kid_subsets, "seed": seed, "warning": warning}

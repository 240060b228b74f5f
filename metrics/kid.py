"""Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³.

Subsets are drawn exactly as torch-fidelity draws them with ``rng_seed=seed`` (``np.random.RandomState(seed)``,
then per subset ``choice(n_real, m)`` and ``choice(n_fake, m)`` without replacement), so a seeded value here can be
reproduced by that library as ``kid_features_to_metric(real, fake, rng_seed=seed)``; the subset size is capped by
both sample counts and recorded.

Speed (measured with scripts/bench_metrics.py; the Gram products are the whole cost):

- Every subset is a multiset of rows of the original sets, so its kernel sums are quadratic forms
  ``cᵀ K c - Σᵢ cᵢ Kᵢᵢ`` in its count vector ``c``. The ``"full"`` route computes K once, in row blocks that are
  never all in memory (upper triangle only for the symmetric real-real and fake-fake blocks), and evaluates all
  subsets with one ``K_block @ C`` product per block. It costs ``(N_r² + N_f²)/2 + N_r·N_f`` kernel entries,
  whatever the number of subsets: the same as 100 subsets of 1000 at N = 10,000, and far less whenever the subsets
  overlap (few samples, many subsets, bootstrap replicates — whose subsets are also multisets of the original rows).
- The ``"subsets"`` route builds each subset's three Gram blocks (``2·m²`` entries per subset, NumPy's
  ``X @ X.T`` dispatches to BLAS ``syrk``): cheaper when few small subsets come from large sets.
  ``route="auto"`` takes the cheaper one.
- ``precision="mixed"`` (default) does the Gram products and the cube in float32 and accumulates every sum over
  kernel entries in float64; it agrees with ``"float64"`` to ~1e-7 relative (kernel entries are ~1 and their
  float32 rounding errors average out over m² entries; the tolerance in ../shared/metric-refs for float32
  paths is 1e-4). ``"float64"`` keeps everything in float64.
"""
from __future__ import annotations

import numpy as np
import torch

from medsynbench.metrics.registry import register_metric

PRECISIONS = {"mixed": np.float32, "float64": np.float64}
ROUTES = ("auto", "full", "subsets")
_BLOCK_ELEMENTS = 1 << 23  # kernel entries per row block of the "full" route (32 MB in float32)


def _as_array(feats, precision: str) -> np.ndarray:
    if precision not in PRECISIONS:
        raise ValueError(f"KID precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    return np.ascontiguousarray(feats, dtype=PRECISIONS[precision])


def _cube_kernel(gram: np.ndarray, d: int) -> np.ndarray:
    """(g/d + 1)³ in place (no extra m×m buffers beyond one product)."""
    gram *= 1.0 / d
    gram += 1.0
    k = gram * gram
    k *= gram
    return k


def _block_sum(a: np.ndarray, b: np.ndarray, exclude_diagonal: bool) -> float:
    """Σ (a·b/d + 1)³ over the a×b kernel block (minus its diagonal), accumulated in float64."""
    k = _cube_kernel(a @ b.T, a.shape[1])  # NumPy: BLAS syrk when b is a
    total = k.sum(dtype=np.float64)
    if exclude_diagonal:
        total -= np.trace(k, dtype=np.float64)
    return float(total)


def poly_mmd2(x, y, precision: str = "float64") -> float:
    """Unbiased MMD² of two sample sets (diagonals of Kxx, Kyy excluded; Kxy full) with the cubic kernel."""
    x, y = _as_array(x, precision), _as_array(y, precision)
    m, n = x.shape[0], y.shape[0]
    return (_block_sum(x, x, True) / (m * (m - 1)) + _block_sum(y, y, True) / (n * (n - 1))
            - 2 * _block_sum(x, y, False) / (m * n))


def _counts(n: int, subsets: list[np.ndarray], dtype) -> np.ndarray:
    """[n, B] matrix: how often each row occurs in each subset (duplicates allowed)."""
    c = np.zeros((n, len(subsets)), dtype=dtype)
    for b, idx in enumerate(subsets):
        np.add.at(c[:, b], idx, 1)
    return c


def _quadratic_forms(a: np.ndarray, ca: np.ndarray, b: np.ndarray | None = None, cb: np.ndarray | None = None):
    """Per subset j: Σ_pq ca[p,j] K(a_p, b_q) cb[q,j] and (symmetric case) Σ_p ca[p,j] K(a_p, a_p), in float64.

    ``b is None`` means b = a (symmetric): only blocks on and above the diagonal are formed, the ones above
    counted twice.
    """
    d = a.shape[1]
    symmetric = b is None
    cols = len(a) if symmetric else len(b)
    rows_per_block = int(min(len(a), max(64, _BLOCK_ELEMENTS // max(cols, 1))))
    total = np.zeros(ca.shape[1])
    diag = np.zeros(ca.shape[1]) if symmetric else None
    for s in range(0, len(a), rows_per_block):
        e = min(s + rows_per_block, len(a))
        if symmetric:
            k = _cube_kernel(a[s:e] @ a[s:].T, d)  # rows s:e × columns s: (the upper part of K)
            weights = ca[s:].copy()
            weights[e - s:] *= 2  # entries above the diagonal block stand for their mirror image too
            diag += ca[s:e].astype(np.float64).T @ np.diagonal(k).astype(np.float64)
        else:
            k = _cube_kernel(a[s:e] @ b.T, d)
            weights = cb
        total += np.einsum("ij,ij->j", ca[s:e].astype(np.float64), (k @ weights).astype(np.float64))
    return total, diag


def mmd2_subsets(real, fake, real_subsets: list[np.ndarray], fake_subsets: list[np.ndarray],
                 precision: str = "mixed", route: str = "auto") -> tuple[np.ndarray, str]:
    """Unbiased poly-kernel MMD² for each pair (real[real_subsets[j]], fake[fake_subsets[j]]).

    Index arrays may repeat rows (bootstrap resamples): a repeated row is a separate sample, exactly as if the
    rows had been copied. Returns the values and the route used ("full" or "subsets", see the module docstring).
    """
    if route not in ROUTES:
        raise ValueError(f"KID route must be one of {ROUTES}, got {route!r}")
    real, fake = _as_array(real, precision), _as_array(fake, precision)
    if len(real_subsets) != len(fake_subsets):
        raise ValueError(f"{len(real_subsets)} real subsets but {len(fake_subsets)} fake subsets")
    sizes_r = np.array([len(i) for i in real_subsets])
    sizes_f = np.array([len(i) for i in fake_subsets])
    if len(sizes_r) and min(sizes_r.min(), sizes_f.min()) < 2:
        raise ValueError("every KID subset needs at least 2 samples")
    if route == "auto":
        full_cost = (len(real) ** 2 + len(fake) ** 2) / 2 + len(real) * len(fake)
        subsets_cost = float(((sizes_r ** 2 + sizes_f ** 2) / 2 + sizes_r * sizes_f).sum())
        route = "full" if full_cost <= subsets_cost else "subsets"
    if route == "subsets":
        return np.array([poly_mmd2(real[i], fake[j], precision) for i, j in zip(real_subsets, fake_subsets)]), route
    dtype = PRECISIONS[precision]
    cr, cf = _counts(len(real), real_subsets, dtype), _counts(len(fake), fake_subsets, dtype)
    rr, rr_diag = _quadratic_forms(real, cr)
    ff, ff_diag = _quadratic_forms(fake, cf)
    rf, _ = _quadratic_forms(real, cr, fake, cf)
    values = ((rr - rr_diag) / (sizes_r * (sizes_r - 1)) + (ff - ff_diag) / (sizes_f * (sizes_f - 1))
              - 2 * rf / (sizes_r * sizes_f))
    return values, route


def draw_subsets(n_real: int, n_fake: int, num_subsets: int, m: int, seed: int):
    """torch-fidelity's sampler: RandomState(seed), then per subset choice(n_real, m), choice(n_fake, m)."""
    rng = np.random.RandomState(seed)
    real_idx, fake_idx = [], []
    for _ in range(num_subsets):
        real_idx.append(rng.choice(n_real, m, replace=False))
        fake_idx.append(rng.choice(n_fake, m, replace=False))
    return real_idx, fake_idx


def kid_subset_values(real_feats, fake_feats, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                      precision: str = "mixed", route: str = "auto") -> tuple[np.ndarray, int]:
    """Per-subset MMD² values and the subset size actually used (capped by the sample counts)."""
    n_real, n_fake = len(real_feats), len(fake_feats)
    m = min(subset_size, n_real, n_fake)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {n_real} real and {n_fake} synthetic")
    real_idx, fake_idx = draw_subsets(n_real, n_fake, num_subsets, m, seed)
    values, _ = mmd2_subsets(real_feats, fake_feats, real_idx, fake_idx, precision, route)
    return values, m


@register_metric("kid", higher_is_better=False)
def kid_metric(real_feats, fake_feats, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
               kid_precision: str = "mixed", **_) -> dict:
    """KID: mean unbiased poly-kernel MMD² over seeded random subsets."""
    values, m = kid_subset_values(real_feats, fake_feats, kid_subsets, kid_subset_size, seed, precision=kid_precision)
    warning = None
    if m < kid_subset_size:
        warning = f"KID subset size capped at {m} by the sample counts (requested {kid_subset_size})"
    return {"value": float(values.mean()), "std": float(values.std()), "subset_size": m,
            "subsets": kid_subsets, "seed": seed, "precision": kid_precision, "warning": warning}

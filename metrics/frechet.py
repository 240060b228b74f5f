"""Fréchet distance between Gaussians fitted to two feature sets (FID when the features are the FID Inception's).

Why not ``scipy.linalg.sqrtm(S1 @ S2)`` as pytorch-fid / clean-fid do: it is slow (Schur form of a non-symmetric
matrix), can return spurious imaginary parts, and its ``disp`` argument is being removed. We use
``Tr((S1 S2)^½) = Tr((Lᵀ S2 L)^½)`` with S1 = L Lᵀ (Cholesky) when S1 is full rank, else
``Tr((√S1 S2 √S1)^½)`` with √S1 from a symmetric ``eigh``: float64, exact (up to rounding) for singular
covariances too, because both matrices are symmetric positive semi-definite and similar to S1 S2. When the sample counts are much smaller
than the dimension the trace is computed from the centred data instead: the non-zero eigenvalues of S1 S2 are the
squared singular values of Xc1 Xc2ᵀ / √((n1-1)(n2-1)), an n1×n2 problem.

``fd_inf`` (FD∞, Chong & Forsyth 2020) removes the 1/N bias of FD: FD at ~10 sample sizes, a least-squares line
in 1/N, its intercept; the fit is recorded with the value (see ``fd_inf_metric``).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from medsynbench.metrics.registry import register_metric


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1, like np.cov) in float64."""
    x = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N>=2, d], got shape {tuple(x.shape)}")
    mu = x.mean(0)
    xc = x - mu
    cov = xc.T @ xc / (x.shape[0] - 1)
    return mu.numpy(), cov.numpy()


def _clip_noise(w: torch.Tensor) -> torch.Tensor:
    """Zero eigenvalues below the rounding level: in a rank-deficient covariance they are noise of either sign,
    and their square roots (~1e-8 of the scale) would otherwise leak into the trace."""
    tol = w.abs().max() * w.shape[0] * torch.finfo(w.dtype).eps
    return torch.where(w > tol, w, torch.zeros_like(w))


def _sqrt_psd(mat: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(mat)
    return (v * _clip_noise(w).sqrt()) @ v.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr((cov1 cov2)^½) for symmetric PSD matrices via two eigh calls (float64)."""
    c1 = torch.as_tensor(cov1, dtype=torch.float64)
    c2 = torch.as_tensor(cov2, dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex((c1 + c1.T) / 2)
    if int(info) == 0:  # full rank: Lᵀ S2 L is similar to S1 S2 and needs no eigenvectors (fastest route)
        m = chol.T @ c2 @ chol
        return float(_clip_noise(torch.linalg.eigvalsh((m + m.T) / 2)).sqrt().sum())
    s1 = _sqrt_psd((c1 + c1.T) / 2)  # singular: √S1 from its eigendecomposition
    m = s1 @ c2 @ s1
    w = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(_clip_noise(w).sqrt().sum())


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt_product(cov1, cov2))


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray, method: str = "auto") -> float:
    """Fréchet distance between the Gaussian fits of two [N, d] feature arrays (float64 throughout).

    method: "cov" (d×d eigh route), "gram" (n1×n2 SVD route, cheaper when N << d) or "auto".
    """
    x1 = torch.as_tensor(np.asarray(feats1), dtype=torch.float64)
    x2 = torch.as_tensor(np.asarray(feats2), dtype=torch.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"need two [N, d] arrays with the same d, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    n1, n2, d = x1.shape[0], x2.shape[0], x1.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"Fréchet distance needs at least 2 samples per set, got {n1} and {n2}")
    if method == "auto":  # cost of an n1×n2 SVD vs two d×d eigh
        method = "gram" if n1 * n2 * min(n1, n2) < 2 * d ** 3 else "cov"
    mu1, mu2 = x1.mean(0), x2.mean(0)
    xc1, xc2 = x1 - mu1, x2 - mu2
    diff = mu1 - mu2
    tr1 = float((xc1 * xc1).sum()) / (n1 - 1)
    tr2 = float((xc2 * xc2).sum()) / (n2 - 1)
    if method == "gram":
        cross = xc1 @ xc2.T / np.sqrt((n1 - 1) * (n2 - 1))
        tr_sqrt = float(torch.linalg.svdvals(cross).sum())
    elif method == "cov":
        tr_sqrt = trace_sqrt_product((xc1.T @ xc1 / (n1 - 1)).numpy(), (xc2.T @ xc2 / (n2 - 1)).numpy())
    else:
        raise ValueError(f"unknown Fréchet method {method!r}; valid: auto, cov, gram")
    return float(diff @ diff) + tr1 + tr2 - 2 * tr_sqrt


def small_sample_warning(n_real: int, n_fake: int, dim: int) -> str | None:
    if min(n_real, n_fake) <= dim:
        return (f"fewer samples ({min(n_real, n_fake)}) than feature dimensions ({dim}): covariances are singular and "
                f"the Fréchet distance is strongly biased upwards; compare only values with equal sample counts")
    return None


@register_metric("fd", higher_is_better=False)
def fd_metric(real_feats, fake_feats, **_) -> dict:
    """Fréchet distance between Gaussian fits of real and synthetic features."""
    return {"value": frechet_distance(real_feats, fake_feats),
            "warning": small_sample_warning(len(real_feats), len(fake_feats), np.shape(real_feats)[1])}


def _split_real(n_real: int, n_fake: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two disjoint random halves of the real set, each matched in size to the synthetic set where possible."""
    m = min(n_fake, n_real // 2)
    if m < 2:
        raise ValueError(f"FD_rr needs at least 4 real samples and 2 synthetic ones, got {n_real} and {n_fake}")
    perm = np.random.default_rng(seed).permutation(n_real)
    fake_idx = np.random.default_rng(seed + 1).permutation(n_fake)[:m]
    return perm[:m], perm[m:2 * m], fake_idx


@register_metric("fd_rr", higher_is_better=False)
def fd_rr_metric(real_feats, fake_feats, seed: int = 0, **_) -> dict:
    """FD between two disjoint random halves of the real features (the lower bound FID_rr), size-matched."""
    a, b, _ = _split_real(len(real_feats), len(fake_feats), seed)
    return {"value": frechet_distance(real_feats[a], real_feats[b]), "subset_size": len(a), "seed": seed,
            "warning": small_sample_warning(len(a), len(b), np.shape(real_feats)[1])}


def _ratio_parts(real_feats, fake_feats, seed):
    a, b, f = _split_real(len(real_feats), len(fake_feats), seed)
    fd_rr = frechet_distance(real_feats[a], real_feats[b])
    fd_rs = frechet_distance(real_feats[a], fake_feats[f])  # same sizes as fd_rr, so the sample bias cancels
    return fd_rr, fd_rs, len(a)


@register_metric("r_fd", higher_is_better=True)
def r_fd_metric(real_feats, fake_feats, seed: int = 0, **_) -> dict:
    """r_FID = FD_rr / FD_rs (medigan definition; 1 = synthetic indistinguishable from real, higher is better)."""
    fd_rr, fd_rs, m = _ratio_parts(real_feats, fake_feats, seed)
    return {"value": fd_rr / fd_rs if fd_rs > 0 else float("inf"), "fd_rr": fd_rr, "fd_rs_matched": fd_rs,
            "subset_size": m, "seed": seed, "definition": "FD_rr / FD_rs (medigan)"}


@register_metric("rel_fd", higher_is_better=False)
def rel_fd_metric(real_feats, fake_feats, seed: int = 0, **_) -> dict:
    """Relative FD = FD_rs / FD_rr (inverse of r_FID; 1 = indistinguishable, lower is better)."""
    fd_rr, fd_rs, m = _ratio_parts(real_feats, fake_feats, seed)
    return {"value": fd_rs / fd_rr if fd_rr > 0 else float("inf"), "fd_rr": fd_rr, "fd_rs_matched": fd_rs,
            "subset_size": m, "seed": seed, "definition": "FD_rs / FD_rr"}


def fd_inf_sizes(n_max: int, dim: int, points: int = 10) -> np.ndarray:
    """Sample sizes of the FD∞ fit: ``points`` sizes evenly spaced in 1/N from N_min to N_max.

    N_min = max(N_max/5, min(d+1, N_max/2), 2): a 5x range of N (Chong & Forsyth use 10x from 5k to 50k; we have
    far fewer samples), but no size at or below the feature dimension when N_max allows it, because with N <= d
    the covariances are singular and FD_N is not linear in 1/N.
    """
    n_min = max(int(np.ceil(n_max / 5)), min(dim + 1, n_max // 2), 2)
    if n_max < 3 or n_min >= n_max:
        raise ValueError(f"FD∞ needs at least 3 samples per set to fit a line, got N_max={n_max}")
    inv = np.linspace(1 / n_min, 1 / n_max, points)
    return np.unique(np.round(1 / inv).astype(int))


@register_metric("fd_inf", higher_is_better=False)
def fd_inf_metric(real_feats, fake_feats, seed: int = 0, fd_inf_points: int = 10, fd_inf_repeats: int = 3,
                  fd_inf_min_r2: float = 0.9, **_) -> dict:
    """FD∞ (Chong & Forsyth 2020): FD at several sample sizes N, least-squares line in 1/N, intercept at 1/N = 0.

    At each size both sets are subsampled without replacement (``fd_inf_repeats`` seeded draws, averaged); the
    line FD_N = FD∞ + slope/N is fitted to the per-size means (scipy.stats.linregress). The fit (sizes, mean FDs,
    slope, intercept and its standard error, R²) is recorded; a warning is set when N_max <= d (singular
    covariances: FD_N is not linear in 1/N and FD∞ stays biased upwards) or when R² < ``fd_inf_min_r2``.
    """
    from scipy import stats

    real, fake = np.asarray(real_feats), np.asarray(fake_feats)
    n_max, dim = min(len(real), len(fake)), real.shape[1]
    sizes = fd_inf_sizes(n_max, dim, fd_inf_points)
    rng = np.random.default_rng(seed)
    means = []
    for n in sizes:
        reps = 1 if n == len(real) == len(fake) else fd_inf_repeats  # the full sets: every draw is the same
        means.append(np.mean([frechet_distance(real[rng.choice(len(real), n, replace=False)],
                                               fake[rng.choice(len(fake), n, replace=False)])
                              for _ in range(reps)]))
    fit = stats.linregress(1.0 / sizes, means)
    r2 = float(fit.rvalue ** 2)
    problems = []
    if n_max <= dim:
        problems.append(f"N_max={n_max} <= feature dimension {dim}: covariances are singular, FD_N is not linear "
                        f"in 1/N and FD∞ remains biased upwards")
    if not r2 >= fd_inf_min_r2:
        problems.append(f"poor linear fit of FD against 1/N (R²={r2:.3f} < {fd_inf_min_r2})")
    return {"value": float(fit.intercept), "fit_ns": json.dumps(sizes.tolist()),
            "fit_fds": json.dumps([round(float(v), 6) for v in means]), "fit_slope": float(fit.slope),
            "fit_intercept": float(fit.intercept), "fit_intercept_stderr": float(fit.intercept_stderr),
            "fit_r2": r2, "repeats": fd_inf_repeats, "seed": seed,
            "definition": "intercept of least-squares FD_N = FD_inf + slope/N (Chong & Forsyth 2020)",
            "warning": "; ".join(problems) or None}

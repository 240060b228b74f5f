"""Image-space metrics registered for ``compute_image_metrics``: delentropy distributions, memorisation and
MS-SSIM diversity. Each returns one or more partial records (the caller adds counts and provenance)."""
from __future__ import annotations

import json

import numpy as np
import torch
from scipy import stats

from medsynbench.metrics.delentropy import delentropy, distribution, to_gray_integers
from medsynbench.metrics.memorisation import memorisation_ratios
from medsynbench.metrics.registry import register_metric

MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@register_metric("delentropy", higher_is_better=False, kind="image")
def delentropy_metric(real, fake, delentropy_variant: str = "central_unit_bins", bit_depth: int = 8,
                      hist_bins: int = 20, delentropy_keep_values: int = 2000, **_) -> list[dict]:
    """Per-image delentropy distributions of real and synthetic sets, compared by Wasserstein-1 and KS.

    The ``delentropy_w1`` record also keeps the per-image values (``real_values`` / ``fake_values``: JSON lists in
    bits, 4 decimals, the first ``delentropy_keep_values`` images of each set) for reports (violins); the other two
    records share the summary distributions only, so a record stays small."""
    d_real = np.array([delentropy(im, delentropy_variant) for im in to_gray_integers(real, bit_depth)])
    d_fake = np.array([delentropy(im, delentropy_variant) for im in to_gray_integers(fake, bit_depth)])
    lo, hi = float(min(d_real.min(), d_fake.min())), float(max(d_real.max(), d_fake.max()))
    common = {"variant": delentropy_variant, "bit_depth": bit_depth, "gray": "1 channel as is; RGB via BT.709",
              "log_base": 2, "half_factor": True,
              "real_distribution": json.dumps(distribution(d_real, hist_bins, (lo, hi))),
              "fake_distribution": json.dumps(distribution(d_fake, hist_bins, (lo, hi)))}
    ks = stats.ks_2samp(d_real, d_fake)
    keep = max(int(delentropy_keep_values), 0)
    values = {"real_values": json.dumps([round(float(v), 4) for v in d_real[:keep]]),
              "fake_values": json.dumps([round(float(v), 4) for v in d_fake[:keep]]),
              "values_kept": f"{min(keep, len(d_real))} of {len(d_real)} real, {min(keep, len(d_fake))} of "
                             f"{len(d_fake)} synthetic"}
    return [
        {"metric": "delentropy_w1", "value": float(stats.wasserstein_distance(d_real, d_fake)), **common, **values},
        {"metric": "delentropy_ks", "value": float(ks.statistic), "pvalue": float(ks.pvalue), **common},
        {"metric": "delentropy_mean_gap", "value": float(abs(d_fake.mean() - d_real.mean())),
         "real_mean": float(d_real.mean()), "fake_mean": float(d_fake.mean()), **common},
    ]


@register_metric("memorisation", higher_is_better=False, kind="image")
def memorisation_metric(real, fake, train_images=None, copy_ratio: float = 0.5, **_) -> list[dict]:
    """Fraction of synthetic samples nearer a training image than copy_ratio × that image's NN spacing."""
    if train_images is None:
        raise ValueError("memorisation compares synthetic samples with the training images: pass train_images=")
    r = memorisation_ratios(fake, train_images)["ratio"]
    common = {"space": "pixels (flattened, [-1, 1])", "n_train": int(len(train_images))}
    return [
        {"metric": "copied_fraction", "value": float((r < copy_ratio).mean()), "copy_ratio": copy_ratio, **common},
        {"metric": "authenticity", "value": float((r > 1).mean()), "higher_is_better": True,
         "definition": "fraction with NN-train distance ratio > 1", **common},
        {"metric": "memorisation_ratio_median", "value": float(np.median(r)), "higher_is_better": True, **common},
    ]


def mean_pairwise_msssim(images: torch.Tensor, n_pairs: int, seed: int, kernel_size: int = 11) -> tuple[float, dict]:
    """Mean MS-SSIM over seeded random pairs of distinct images (torchmetrics), scales fitted to the image size."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim
    x = (torch.as_tensor(images).float() + 1) / 2
    n, size = len(x), min(x.shape[-2:])
    if n < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    scales = 5
    while scales > 1 and size <= (kernel_size - 1) * 2 ** (scales - 1):
        scales -= 1
    if size <= kernel_size - 1:
        raise ValueError(f"images of {size} px are too small for MS-SSIM with kernel {kernel_size}")
    betas = tuple(b / sum(MSSSIM_BETAS[:scales]) for b in MSSSIM_BETAS[:scales])
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(n, (n_pairs,), generator=g)
    b = (a + torch.randint(1, n, (n_pairs,), generator=g)) % n  # never pairs an image with itself
    vals = msssim(x[a], x[b], data_range=1.0, kernel_size=kernel_size, betas=betas, reduction="none",
                  normalize="relu")
    return float(vals.mean()), {"scales": scales, "betas": json.dumps([round(v, 4) for v in betas]),
                                "kernel_size": kernel_size, "n_pairs": n_pairs}


@register_metric("msssim", higher_is_better=False, kind="image")
def msssim_metric(real, fake, msssim_pairs: int = 200, seed: int = 0, **_) -> list[dict]:
    """Diversity: mean pairwise MS-SSIM within the synthetic set (lower = more diverse), beside the real set's."""
    v_fake, info = mean_pairwise_msssim(fake, msssim_pairs, seed)
    v_real, _ = mean_pairwise_msssim(real, msssim_pairs, seed)
    return [{"metric": "msssim_fake", "value": v_fake, "real_value": v_real, **info},
            {"metric": "msssim_gap", "value": abs(v_fake - v_real), "fake_value": v_fake, "real_value": v_real,
             **info}]

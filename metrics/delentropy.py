"""Delentropy (Larkin 2016, arXiv:1609.01117, eqs. 4-5): entropy of the joint distribution of image gradients.

Public implementations differ in the derivative kernel, bins, histogram range, normaliser, log base and the ½
factor; the three variants pinned in ``shared/metric-refs/delentropy.json`` are implemented exactly and named:

- ``central_unit_bins`` (default): central differences without ½ on the (H-2)×(W-2) interior; unit bins centred on
  integers, ``nBins = min(1024, 2·diffRange+1)``, diffRange snapped to 255 / 65535 near the 8 / 16-bit maxima;
  float input: 1024 bins over ±diffRange.
- ``diagonal_2x2_unit_bins`` (Larkin's own program): Re = f(x+1,y+1)-f(x,y), Im = f(x+1,y)-f(x,y+1) on each 2×2
  block; unit integer bins spanning the observed ranges.
- ``central_255_bins_autorange``: central differences, 255 bins over the data's own range.

All use p = count / total and H = -½ Σ p log2 p (bits; the ½ is Papoulis' halving, paper sec. 4.3).
Pass integer images (e.g. 8-bit) to the integer-bin variants: dtype changes the binning.
"""
from __future__ import annotations

import numpy as np

VARIANTS = ("central_unit_bins", "diagonal_2x2_unit_bins", "central_255_bins_autorange")


def _entropy_half_bits(hist: np.ndarray) -> float:
    p = hist[hist > 0] / hist.sum()
    return float(-0.5 * np.sum(p * np.log2(p)))


def _central(f: np.ndarray):
    fx = (f[:, 2:] - f[:, :-2])[1:-1, :]
    fy = (f[2:, :] - f[:-2, :])[:, 1:-1]
    return fx, fy


def delentropy(image: np.ndarray, variant: str = "central_unit_bins") -> float:
    """Delentropy in bits of one 2-D greyscale image (integer dtypes → integer bins; floats as given)."""
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 3:
        raise ValueError(f"delentropy needs a 2-D greyscale image of at least 3×3, got shape {img.shape}")
    is_int = np.issubdtype(img.dtype, np.integer) or img.dtype == bool
    f = img.astype(np.int64) if is_int else img.astype(np.float64)
    if variant == "central_unit_bins":
        fx, fy = _central(f)
        diff_range = float(max(np.abs(fx).max(), np.abs(fy).max()))
        if 200 <= diff_range <= 255:
            diff_range = 255.0
        elif 60000 <= diff_range <= 65535:
            diff_range = 65535.0
        if is_int:
            n_bins = int(min(1024, 2 * diff_range + 1))
            r = diff_range + 0.5
        else:
            n_bins, r = 1024, diff_range
            if r == 0:
                return -0.0
        hist, _, _ = np.histogram2d(fx.ravel(), fy.ravel(), bins=n_bins, range=[[-r, r], [-r, r]])
        return _entropy_half_bits(hist)
    if variant == "diagonal_2x2_unit_bins":
        re = (f[1:, 1:] - f[:-1, :-1]).ravel()
        im = (f[1:, :-1] - f[:-1, 1:]).ravel()
        if is_int:  # unit bins: count each distinct integer pair
            re_i, im_i = re - re.min(), im - im.min()
            counts = np.bincount((re_i * (im_i.max() + 1) + im_i).astype(np.int64))
        else:
            _, counts = np.unique(np.stack([re, im], 1), axis=0, return_counts=True)
        return _entropy_half_bits(counts.astype(np.float64))
    if variant == "central_255_bins_autorange":
        fx, fy = _central(f)
        hist, _, _ = np.histogram2d(fx.ravel(), fy.ravel(), bins=255)
        return _entropy_half_bits(hist)
    raise ValueError(f"unknown delentropy variant {variant!r}; valid: {', '.join(VARIANTS)}")


def to_gray_integers(images, bit_depth: int = 8) -> np.ndarray:
    """[N, C, H, W] images in [-1, 1] → [N, H, W] integers in [0, 2**bit_depth - 1].

    RGB → luminance with skimage.color.rgb2gray's BT.709 weights; one channel is taken as is. Rounding to the
    bit depth makes the unit-bin variants meaningful (they bin integer gradient values).
    """
    x = np.asarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {x.shape}")
    if x.shape[1] == 3:
        x = np.tensordot(np.array([0.2125, 0.7154, 0.0721]), x, axes=([0], [1]))
    elif x.shape[1] == 1:
        x = x[:, 0]
    else:
        raise ValueError(f"delentropy: expected 1 or 3 channels, got {x.shape[1]}")
    top = 2 ** bit_depth - 1
    return np.clip(np.round((x + 1) / 2 * top), 0, top).astype(np.uint16 if bit_depth > 8 else np.uint8)


def distribution(values: np.ndarray, bins: int = 20, value_range: tuple[float, float] | None = None) -> dict:
    """Mean, std, quantiles and a histogram of per-image delentropies."""
    v = np.asarray(values, dtype=np.float64)
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    hist, edges = np.histogram(v, bins=bins, range=value_range)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            **{f"q{int(p * 100):02d}": float(x) for p, x in zip([0.05, 0.25, 0.5, 0.75, 0.95], q)},
            "hist_counts": hist.tolist(), "hist_edges": [round(e, 6) for e in edges.tolist()]}

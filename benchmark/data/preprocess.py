"""Explicit preprocessing: colour -> square resize -> intensity normalisation -> [-1, 1].

Normalisation alone moves FID a lot (medigan paper), so nothing here is implicit: every step is chosen by
``DataConfig`` and :func:`describe` returns the record stored in ``bundle.meta["preprocessing"]``.
Intensity statistics (min/max, percentiles, mean/std) are per image (per 2D slice for volumes), after resizing.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from medsynbench.benchmark.data.config import DataConfig
from medsynbench.benchmark.data.errors import DataError

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,  # box filter = area averaging when downscaling
    "lanczos": Image.Resampling.LANCZOS,
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")


def describe(cfg: DataConfig) -> dict:
    """The preprocessing record of a run (stored verbatim in the results)."""
    rec = {
        "order": ["color", "resize", "intensity", "to [-1, 1]"],
        "image_size": cfg.image_size,
        "resize_method": cfg.resize_method,
        "resize_library": "Pillow (antialiased; 'area' = BOX filter)",
        "mask_resize": "nearest",
        "color": cfg.color,
        "intensity": cfg.intensity,
        "output_range": [-1.0, 1.0],
    }
    if cfg.intensity == "fixed":
        rec["fixed_range"] = list(cfg.fixed_range) if cfg.fixed_range is not None else "[0, bit-depth max]"
    elif cfg.intensity == "percentile":
        rec["percentiles"] = list(cfg.percentiles)
    elif cfg.intensity == "zscore":
        rec["zscore_clip"] = cfg.zscore_clip
    return rec


def to_channels_first(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] -> float32 [C, H, W]."""
    arr = np.asarray(array, dtype=np.float32)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def convert_color(x: np.ndarray, color: str) -> np.ndarray:
    """[C, H, W] float -> grayscale (1 channel), rgb (3 channels) or unchanged (native)."""
    if color == "grayscale" and x.shape[0] == 3:
        return np.tensordot(_LUMA, x, axes=1)[None]
    if color == "rgb" and x.shape[0] == 1:
        return np.repeat(x, 3, axis=0)
    return x


def resize(x: np.ndarray, size: int | None, method: str) -> np.ndarray:
    """Square resize of each channel of a float [C, H, W] array with Pillow (aspect ratio not kept)."""
    if size is None or x.shape[1:] == (size, size):
        return x
    flt = _PIL_FILTERS[method]
    return np.stack([np.asarray(Image.fromarray(c, mode="F").resize((size, size), flt)) for c in x])


def resize_mask(mask: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or mask.shape == (size, size):
        return mask
    im = Image.fromarray(mask.astype(np.int32), mode="I")
    return np.asarray(im.resize((size, size), Image.Resampling.NEAREST)).astype(np.int64)


def normalise(x: np.ndarray, cfg: DataConfig, max_value: float | None, source: str) -> np.ndarray:
    """Map intensities to [-1, 1] with the configured scheme."""
    if cfg.intensity == "fixed":
        if cfg.fixed_range is not None:
            lo, hi = float(cfg.fixed_range[0]), float(cfg.fixed_range[1])
        elif max_value is not None:
            lo, hi = 0.0, float(max_value)
        else:
            raise DataError(f"{source}: data.intensity=fixed needs a bit depth, but this image is stored as a "
                            "signed or floating-point array; set data.fixed_range=[lo,hi] or use "
                            "data.intensity=minmax|percentile|zscore")
        unit = (x - lo) / (hi - lo)
    elif cfg.intensity == "minmax":
        unit = _minmax(x, float(x.min()), float(x.max()))
    elif cfg.intensity == "percentile":
        lo, hi = np.percentile(x, [cfg.percentiles[0], cfg.percentiles[1]])
        unit = _minmax(np.clip(x, lo, hi), float(lo), float(hi))
    else:  # zscore
        std = float(x.std())
        z = (x - float(x.mean())) / std if std > 0 else np.zeros_like(x)
        k = float(cfg.zscore_clip)
        return (np.clip(z, -k, k) / k).astype(np.float32)
    return (np.clip(unit, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def _minmax(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def preprocess_image(array: np.ndarray, max_value: float | None, cfg: DataConfig, source: str) -> np.ndarray:
    """Raw [H, W] / [H, W, C] pixels -> float32 [C, S, S] in [-1, 1]."""
    x = convert_color(to_channels_first(array), cfg.color)
    x = resize(x, cfg.image_size, cfg.resize_method)
    return normalise(x, cfg, max_value, source)


def mask_to_classes(mask: np.ndarray, mode: str, threshold: int, source: str) -> np.ndarray:
    """Raw mask pixels -> int64 [H, W] class indices (binary: any colour channel above threshold)."""
    if mode == "binary":
        m = mask
        if mask.ndim == 3:  # channel-wise maximum (np.max over the last axis is slow on interleaved RGB)
            m = mask[..., 0]
            for c in range(1, mask.shape[-1]):
                m = np.maximum(m, mask[..., c])
        return (m > threshold).astype(np.int64)
    if mask.ndim == 3:
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[-1])):
            raise DataError(f"{source}: mask_mode=index needs single-channel masks (class index per pixel), "
                            f"this mask has {mask.shape[-1]} differing colour channels")
        mask = mask[..., 0]
    if np.issubdtype(mask.dtype, np.floating) and not np.all(mask == np.round(mask)):
        raise DataError(f"{source}: mask_mode=index needs integer class values, found fractional values")
    if mask.min() < 0:
        raise DataError(f"{source}: mask has negative values ({mask.min()}); class indices start at 0")
    return mask.astype(np.int64)

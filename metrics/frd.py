"""Fréchet Radiomics Distance (Konz et al.) via the optional ``frd-score`` package (pyradiomics features).

Optional because pyradiomics does not build in pip's isolated build on this stack; what works
(../shared/metric-refs/SUMMARY.md, reproduced in a throwaway venv with frd-score 1.0.1 + pyradiomics 3.0.1):

    pip install "setuptools<81" wheel versioneer numpy
    pip install --no-build-isolation pyradiomics
    pip install frd-score

frd-score reads image files, so both sets are written as 8-bit PNGs (round((x + 1) * 127.5)) to a temporary
directory and scored with ``frd_score.compute_frd``. FRD v1 (the default) is log-transformed, log(d_F²) in the
package's convention (identical sets give -inf). Radiomics cost ~0.2 s per image on this CPU.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from medsynbench.metrics.registry import register_metric

INSTALL_STEPS = ('pip install "setuptools<81" wheel versioneer numpy && '
                 "pip install --no-build-isolation pyradiomics && pip install frd-score")


def _import_frd_score():
    try:
        import frd_score
    except ImportError as err:
        raise ImportError(f"the 'frd' metric needs the optional package frd-score with pyradiomics ({err}). "
                          f"pyradiomics does not build in pip's isolated build; install in this order: "
                          f"{INSTALL_STEPS}") from err
    return frd_score


def _write_pngs(images: torch.Tensor, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    x = ((torch.as_tensor(images).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FRD needs [N, 1 or 3, H, W] images, got shape {tuple(x.shape)}")
    for i, img in enumerate(x):
        arr = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        Image.fromarray(arr).save(folder / f"{i:06d}.png")


def frechet_radiomics_distance(real_images, fake_images, frd_version: str = "v1", num_workers: int | None = 1,
                               **frd_kwargs) -> float:
    """FRD between two [N, C, H, W] image sets in [-1, 1] (frd-score's compute_frd on PNG copies)."""
    frd_score = _import_frd_score()
    with tempfile.TemporaryDirectory(prefix="frd_") as tmp:
        real_dir, fake_dir = Path(tmp) / "real", Path(tmp) / "fake"
        _write_pngs(real_images, real_dir)
        _write_pngs(fake_images, fake_dir)
        return float(frd_score.compute_frd([str(real_dir), str(fake_dir)], frd_version=frd_version,
                                           num_workers=num_workers, **frd_kwargs))


@register_metric("frd", higher_is_better=False, kind="image")
def frd_metric(real_images, fake_images, frd_version: str = "v1", frd_num_workers: int | None = 1, **_) -> dict:
    """Fréchet Radiomics Distance (optional frd-score package; log-scale for v1)."""
    from importlib.metadata import version

    value = frechet_radiomics_distance(real_images, fake_images, frd_version, frd_num_workers)
    return {"value": value, "frd_version": frd_version, "implementation_frd": f"frd-score {version('frd-score')}",
            "quantise": "uint8 round((x+1)*127.5), PNG"}

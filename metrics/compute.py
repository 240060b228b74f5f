"""Turn feature arrays / image sets into provenance-rich metric records (one flat dict per number).

Every record says how its number was made: the protocol-carrying metric name (``fid_inception`` only for the
standard FID Inception weights, otherwise ``fd_<extractor>``), the extractor and its weights, sample counts,
parameters (k, subsets, bootstrap count, seed), a bootstrap confidence interval where requested, a warning when
the sample counts are too small, and the implementation version.
"""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from medsynbench.metrics import bootstrap as _bootstrap
from medsynbench.metrics.registry import get_metric, list_metrics


def implementation() -> str:
    try:
        return f"medsynbench {version('medsynbench')}"
    except PackageNotFoundError:
        return "medsynbench (not installed)"


def _versions() -> str:
    out = []
    for pkg in ("torch", "numpy", "scipy", "torchmetrics"):
        try:
            out.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return ",".join(out)


def metric_name(base: str, extractor: dict, k: int) -> str:
    """The protocol lives in the name: fid_* only for the standard FID Inception weights."""
    suffix = extractor.get("metric_suffix") or extractor.get("name", "features")
    standard = bool(extractor.get("standard_fid"))
    if base in ("fd", "fd_rr", "r_fd") and standard:
        return {"fd": "fid_inception", "fd_rr": "fid_rr_inception", "r_fd": "r_fid_inception"}[base]
    if base in ("precision", "recall", "density", "coverage"):
        return f"{base}_k{k}_{suffix}"
    return f"{base}_{suffix}"


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and not k.startswith("_")}


def compute_feature_metrics(real_feats, fake_feats, names=("fd", "kid", "precision", "recall", "density", "coverage"),
                            extractor: dict | None = None, seed: int = 0, k: int = 3, kid_subsets: int = 100,
                            kid_subset_size: int = 1000, bootstrap: int = 0, ci: float = 0.95,
                            bootstrap_kid_subsets: int = 10, chunk: int = 1024, kid_precision: str = "mixed",
                            is_splits: int = 10, **options) -> list[dict]:
    """All requested feature metrics from one pair of feature arrays.

    ``names`` may use ``prdc`` as shorthand for precision, recall, density and coverage. ``bootstrap`` > 0 adds a
    seeded percentile confidence interval (level ``ci``) to fd, kid and precision/recall/density/coverage.
    """
    real = np.asarray(real_feats)
    fake = np.asarray(fake_feats)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need real and fake features [N, d] with the same d, got {real.shape} and {fake.shape}")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("features contain NaN or inf; check the extractor and the images")
    if options:
        raise TypeError(f"unknown metric options {sorted(options)}; valid: k, kid_subsets, kid_subset_size, "
                        f"bootstrap, ci, bootstrap_kid_subsets, chunk, kid_precision, is_splits")
    extractor = dict(extractor or {"name": "features", "weights": "unknown"})
    expanded: list[str] = []
    for n in names:
        expanded += ["precision", "recall", "density", "coverage"] if n == "prdc" else [n]
    params = {"k": k, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "seed": seed, "chunk": chunk,
              "kid_precision": kid_precision, "is_splits": is_splits, "_prdc_cache": {}}
    records = []
    for name in expanded:
        spec = get_metric(name)
        if spec.kind != "feature":
            where = "compute_image_metrics" if spec.kind == "image" else "medsynbench.metrics.ppl.ppl_metric(gan, ...)"
            raise ValueError(f"{name!r} is a {spec.kind} metric; use {where} "
                             f"(feature metrics: {', '.join(list_metrics('feature'))})")
        if spec.requires == "logits" and not extractor.get("logits"):
            raise ValueError(f"{name!r} needs class logits, but extractor {extractor.get('name')!r} gives "
                             f"{extractor.get('layer') or 'embedding'} features; use e.g. inception_fid with "
                             f"features: logits_unbiased")
        out = spec.fn(real, fake, **params)
        rec = {
            "metric": metric_name(name, extractor, k), "base_metric": name, "value": float(out.pop("value")),
            "higher_is_better": spec.higher_is_better, "extractor": extractor.get("name"),
            "weights": extractor.get("weights"), "weights_sha256": extractor.get("weights_sha256"),
            "feature_dim": int(real.shape[1]), "preprocessing": json.dumps(extractor.get("preprocessing"),
                                                                           sort_keys=True, default=str),
            "n_real": int(len(real)), "n_fake": int(len(fake)), "seed": seed,
            **_clean(out), "implementation": implementation(), "versions": _versions(),
        }
        if bootstrap and name in _bootstrap.SUPPORTED:
            lo, hi, method = _bootstrap.confidence_interval(name, real, fake, params, n_boot=bootstrap, ci=ci,
                                                            seed=seed, kid_subsets=bootstrap_kid_subsets)
            rec.update(ci_low=lo, ci_high=hi, ci_level=ci, bootstrap=bootstrap, ci_method=method)
        records.append(rec)
    return records


def compute_image_metrics(real_images, fake_images, names=("delentropy", "memorisation", "msssim"),
                          train_images=None, seed: int = 0, **options) -> list[dict]:
    """Metrics computed on pixels rather than features (delentropy, memorisation, MS-SSIM diversity).

    Options are routed by prefix-free name to the metric functions that accept them (see each metric).
    """
    from medsynbench.metrics import image_metrics  # noqa: F401  (registers the image metrics)

    real = torch.as_tensor(real_images)
    fake = torch.as_tensor(fake_images)
    records = []
    for name in names:
        spec = get_metric(name)
        if spec.kind != "image":
            raise ValueError(f"{name!r} is a {spec.kind} metric, not an image metric "
                             f"(image metrics: {', '.join(list_metrics('image'))})")
        outs = spec.fn(real, fake, train_images=train_images, seed=seed, **options)
        for out in outs if isinstance(outs, list) else [outs]:
            out = dict(out)
            rec = {"metric": out.pop("metric", name), "base_metric": name, "value": float(out.pop("value")),
                   "higher_is_better": out.pop("higher_is_better", spec.higher_is_better), "extractor": "pixels",
                   "weights": "none", "n_real": int(len(real)), "n_fake": int(len(fake)), "seed": seed,
                   **_clean(out), "implementation": implementation(), "versions": _versions()}
            records.append(rec)
    return records

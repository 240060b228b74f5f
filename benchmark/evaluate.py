"""Evaluation of a trained generator: sample once, extract features once, compute every requested metric from
those features, run the downstream task, and return provenance-rich records."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from medsynbench.gans import draw_train_masks

log = logging.getLogger(__name__)
# What an evaluation adds to a results record (beside the timings).
EVALUATION_FIELDS = ("metrics", "downstream", "collapsed", "collapse_reasons", "collapse_check", "artifacts",
                     "n_samples", "mask_source")


def sample_imageset(gan, n: int, seed: int, bundle: DatasetBundle, batch_size: int) -> ImageSet:
    """n synthetic samples; conditional GANs get labels drawn with the real training label frequencies, mask-conditioned
    GANs get real training masks (``gan.mask_source`` says where a sample's mask came from)."""
    labels = None
    if getattr(gan, "num_classes", 0) and bundle.train.labels is not None:
        g = torch.Generator().manual_seed(seed)
        labels = bundle.train.labels[torch.randint(len(bundle.train), (n,), generator=g)]
    # a mask-conditioned generator (SPADE) draws images for real training masks, as the empirical study did
    masks = draw_train_masks(bundle.train.masks, n, seed) if getattr(gan, "takes_masks", False) else None
    out = gan.sample(n, seed=seed, labels=labels, masks=masks, batch_size=batch_size)
    return ImageSet(images=out["images"].float(), masks=out.get("masks"), labels=out.get("labels", labels),
                    ids=[f"synthetic_{i:06d}" for i in range(n)])


def full_train_split(cfg, bundle: DatasetBundle) -> ImageSet:
    """The whole real training split (not the run's subset): domain extractors trained on it are then the same for
    every training-set size of a sweep, so their distances are comparable across sizes."""
    if cfg.data.train_size is None:
        return bundle.train
    from medsynbench.benchmark.data import load_dataset

    data_cfg = OmegaConf.merge(cfg.data, {"train_size": None})
    return load_dataset(cfg.dataset, data_cfg).train


def evaluate_gan(cfg, gan, bundle: DatasetBundle, device: torch.device, out_dir: Path | None = None) -> dict:
    """Sample ``n_samples`` image(-mask) pairs from the EMA generator, then :func:`evaluate_synthetic`; artefacts
    (e.g. the memorisation closest-pairs grid) go to ``out_dir`` (the run's evaluation folder)."""
    n = cfg.n_samples or len(bundle.test)
    t0 = time.perf_counter()
    gan.eval()
    synthetic = sample_imageset(gan, n, seed=cfg.seed + 1_000_003, bundle=bundle,
                                batch_size=cfg.metrics.get("batch_size", 64))
    sample_s = time.perf_counter() - t0
    result = evaluate_synthetic(cfg, synthetic, bundle, device, out_dir)
    result["timings"]["sample_s"] = sample_s
    result["mask_source"] = getattr(gan, "mask_source", None)
    for row in result["downstream"]:
        if "synthetic" in str(row.get("train_on", "")):
            row["mask_source"] = result["mask_source"]
    result["metrics"] += generator_metrics(cfg, gan, device, result["timings"])
    return result


def generator_metrics(cfg, gan, device: torch.device, timings: dict) -> list[dict]:
    """Metrics of the generator itself (e.g. perceptual path length of a style-based GAN): ``metrics.generator_metrics``
    lists them, ``metrics.generator_options`` holds their options (e.g. ``vgg_weights_path`` for LPIPS)."""
    from medsynbench.metrics import get_metric

    mcfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    records = []
    for name in mcfg.get("generator_metrics", []) or []:
        metric = get_metric(name)
        t0 = time.perf_counter()
        out = metric.fn(gan, device=str(device), **mcfg.get("generator_options", {}))
        timings[f"{name}_s"] = time.perf_counter() - t0
        records.append({**out, "metric": f"{name}_{out.get('distance', 'custom')}",
                        "higher_is_better": metric.higher_is_better, "extractor": out.get("distance")})
    return records


def evaluate_synthetic(cfg, synthetic: ImageSet, bundle: DatasetBundle, device: torch.device,
                       out_dir: Path | None = None) -> dict:
    """All requested metrics from one feature pass per extractor (real features cached), then the downstream task.
    Artefacts (the memorisation closest-pairs grid) are written to ``out_dir`` when given and listed in the result."""
    from medsynbench.downstream import run_downstream
    from medsynbench.metrics import FeatureCache, compute_feature_metrics, compute_image_metrics, get_extractor
    from medsynbench.metrics.collapse import detect_collapse

    mcfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    batch_size = mcfg.get("batch_size", 64)
    progress = bool(cfg.get("train", {}).get("progress", True))
    timings: dict[str, float] = {}
    metric_records: list[dict] = []
    artifacts: dict[str, str] = {}
    cache = FeatureCache(Path(cfg.paths.cache_dir) / "features")
    extractors = mcfg.get("extractors", [])
    train_split = full_train_split(cfg, bundle) if extractors else None  # loaded once for every extractor
    for ext_cfg in extractors:
        ext_cfg = dict(ext_cfg)
        name = ext_cfg.pop("name")
        # an extractor entry may name its own metrics (e.g. Inception Score only on an extractor with logits)
        names = ext_cfg.pop("metrics", None) or list(mcfg.get("feature_metrics", []))
        t0 = time.perf_counter()
        extractor = get_extractor(name, train_set=train_split,
                                  cache_dir=str(Path(cfg.paths.cache_dir) / "extractors"), device=str(device),
                                  seed=mcfg.get("seed", 0), **ext_cfg)
        desc = extractor.describe()
        # keyed by the test images' content and the extractor's actual weights: a replaced file, or another
        # process's differently trained extractor, never reuses these features
        key = {"dataset": bundle.name, "split": "test", "content": bundle.meta.get("test_content_sha256"),
               "ids": bundle.meta.get("test_ids_sha256"), "preprocessing": bundle.meta.get("preprocessing"),
               "extractor": desc, "weights_digest": extractor.weights_digest()}
        real_feats = cache.get_or_compute(
            key, lambda: extractor.features(bundle.test.images, batch_size=batch_size, device=str(device),
                                            progress=progress))
        timings[f"extractor_and_real_features_{name}_s"] = time.perf_counter() - t0  # cache hit: ~0
        t0 = time.perf_counter()
        fake_feats = extractor.features(synthetic.images, batch_size=batch_size, device=str(device), progress=progress)
        timings[f"features_fake_{name}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metric_records += compute_feature_metrics(real_feats, fake_feats, names=names,
                                                  extractor=desc, seed=mcfg.get("seed", 0), **mcfg.get("options", {}))
        timings[f"metrics_{name}_s"] = time.perf_counter() - t0
    if mcfg.get("image_metrics"):
        t0 = time.perf_counter()
        metric_records += compute_image_metrics(bundle.test.images, synthetic.images, names=list(mcfg["image_metrics"]),
                                                train_images=bundle.train.images, seed=mcfg.get("seed", 0),
                                                **mcfg.get("image_options", {}))
        timings["image_metrics_s"] = time.perf_counter() - t0
        if "memorisation" in mcfg["image_metrics"] and out_dir is not None:
            from medsynbench.metrics.memorisation import closest_pairs_grid

            grid = Path(out_dir) / "memorisation_closest_pairs.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            closest_pairs_grid(synthetic.images, bundle.train.images, n=min(8, len(synthetic)), path=str(grid))
            artifacts["memorisation_grid"] = str(grid)
            for rec in metric_records:
                if rec.get("base_metric") == "memorisation":
                    rec["grid"] = str(grid)

    t0 = time.perf_counter()
    downstream_records = run_downstream(cfg.downstream, real_train=bundle.train, synthetic=synthetic,
                                        real_test=bundle.test, num_mask_classes=bundle.num_mask_classes,
                                        num_classes=bundle.num_classes, device=str(device), seed=cfg.seed)
    timings["downstream_s"] = time.perf_counter() - t0
    collapse = detect_collapse(metric_records)
    if collapse["collapsed"]:
        log.warning("generator flagged as collapsed: %s", "; ".join(collapse["reasons"]))
    for rec in metric_records:
        log.info("metric %s = %.5g (%s)", rec["metric"], rec["value"], rec.get("extractor"))
    for rec in downstream_records:
        if not rec.get("skipped"):
            log.info("downstream %s@%s = %.4f", rec["metric"], rec.get("train_on"), rec["value"])
    return {"metrics": metric_records, "downstream": downstream_records, "timings": timings,
            "n_samples": len(synthetic), "artifacts": artifacts, "collapsed": collapse["collapsed"],
            "collapse_reasons": collapse["reasons"], "collapse_check": collapse}

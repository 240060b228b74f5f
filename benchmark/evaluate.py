"""Evaluation of a trained generator: sample once, extract features once, compute every requested metric from
those features, run the downstream task, and return provenance-rich records."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from medsynbench.gans import draw_train_masks

log = logging.getLogger(__name__)
# What an evaluation adds to a results record (beside the timings).
EVALUATION_FIELDS = ("metrics", "downstream", "collapsed", "collapse_reasons", "collapse_check", "artifacts",
                     "n_samples", "sample_counts", "mask_source")


def sample_imageset(gan, n: int, seed: int, bundle: DatasetBundle, batch_size: int, labels=None) -> ImageSet:
    """n synthetic samples; conditional GANs get ``labels`` when given (e.g. a class-balancing plan), else labels drawn
    with the real training label frequencies; mask-conditioned GANs get real training masks (``gan.mask_source`` says
    where a sample's mask came from)."""
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
    elif getattr(gan, "num_classes", 0) and bundle.train.labels is not None:
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
    """Sample the metric set and, separately sized, the downstream set from the EMA generator, then
    :func:`evaluate_synthetic`; artefacts (e.g. the memorisation closest-pairs grid) go to ``out_dir``.

    The metric set has ``n_samples`` images (null: max(real test images, largest feature dimension + 1), so that the
    synthetic side of a Fréchet distance has a full-rank covariance); the downstream set has as many pairs as the
    downstream settings ask for (``synthetic_n``, ``mix_ratio`` / ``mix_n``; see downstream/runner.py)."""
    from medsynbench.benchmark.defaults import metric_sample_count, resolve_run_config
    from medsynbench.downstream.runner import planned_balancing, planned_synthetic
    from medsynbench.downstream.synthetic import plan_labels, sample_chunked

    cfg = resolve_run_config(cfg)  # downstream=auto -> the option that fits dataset.task
    timings: dict[str, float] = {}
    log.info("evaluation: real features (%d test images)", len(bundle.test))
    prepared = prepare_extractors(cfg, bundle, device, timings)
    n, rule = metric_sample_count(cfg.get("n_samples"), len(bundle.test), [p.feature_dim for p in prepared])
    batch_size = cfg.metrics.get("batch_size", 64)
    gan.eval()
    log.info("evaluation: sampling %d synthetic images for the metrics (%s)", n, rule)
    t0 = time.perf_counter()
    synthetic = sample_imageset(gan, n, seed=cfg.seed + 1_000_003, bundle=bundle, batch_size=batch_size)
    timings["sample_s"] = time.perf_counter() - t0
    planned = planned_synthetic(cfg.downstream, len(bundle.train))
    n_downstream = max(planned.values(), default=0)
    downstream_synthetic, balance_synthetic, generation = None, None, {}
    plan = planned_balancing(cfg.downstream, bundle.train, bundle.num_classes, cfg.seed)
    if n_downstream or plan:
        from medsynbench.downstream.config import parse_settings

        ds = parse_settings(cfg.downstream)
        tmp = Path(cfg.paths.cache_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
    if n_downstream:
        log.info("evaluation: sampling %d synthetic pairs for the downstream tasks (%s), in chunks of %d",
                 n_downstream, ", ".join(f"{k}: {v}" for k, v in planned.items() if v), ds.synthetic_chunk)
        t0 = time.perf_counter()
        base_seed = cfg.seed + 2_000_003  # chunk k > 0: its own seed (one chunk = the single call of before)
        downstream_synthetic, generation["downstream"] = sample_chunked(
            lambda start, stop, k: sample_imageset(gan, stop - start, seed=base_seed + 7919 * k, bundle=bundle,
                                                   batch_size=batch_size),
            n_downstream, ds.synthetic_chunk, ds.synthetic_ram_mb, str(tmp))
        timings["sample_downstream_s"] = time.perf_counter() - t0
    if sum(plan.values()) and getattr(gan, "num_classes", 0):
        # real_balanced: the minority classes' images, sampled class by class from the class-conditional GAN
        labels = plan_labels(plan)
        log.info("evaluation: sampling %d synthetic images for class balancing (per class: %s)", len(labels), plan)
        t0 = time.perf_counter()
        bal_seed = cfg.seed + 3_000_017
        balance_synthetic, generation["real_balanced"] = sample_chunked(
            lambda start, stop, k: sample_imageset(gan, stop - start, seed=bal_seed + 7919 * k, bundle=bundle,
                                                   batch_size=batch_size, labels=labels[start:stop]),
            len(labels), ds.synthetic_chunk, ds.synthetic_ram_mb, str(tmp))
        timings["sample_balancing_s"] = time.perf_counter() - t0
    elif sum(plan.values()):
        log.warning("evaluation: real_balanced needs a class-conditional GAN; %s is unconditional (skipped)",
                    getattr(gan, "name", type(gan).__name__))
    result = evaluate_synthetic(cfg, synthetic, bundle, device, out_dir, prepared=prepared,
                                downstream_synthetic=downstream_synthetic, timings=timings,
                                balance_synthetic=balance_synthetic)
    if generation:
        result["sample_counts"]["synthetic_generation"] = generation
    result["sample_counts"]["n_synthetic_metrics_rule"] = rule
    result["mask_source"] = getattr(gan, "mask_source", None)
    for row in result["downstream"]:
        if "synthetic" in str(row.get("train_on", "")):
            row["mask_source"] = result["mask_source"]
    result["metrics"] += generator_metrics(cfg, gan, device, result["timings"])
    return result


@dataclass
class PreparedExtractor:
    """An extractor of ``metrics.extractors`` with the real test features (cached) and the metrics it serves."""

    name: str
    extractor: object
    desc: dict
    metrics: list[str]
    real_feats: object

    @property
    def feature_dim(self) -> int:
        return int(self.real_feats.shape[1])


def _progress(cfg) -> bool:
    """Evaluation progress bars: when ``train.progress`` (``progress`` of evaluate-folder) and stderr is a terminal
    (log lines say the rest)."""
    return bool(cfg.get("progress", cfg.get("train", {}).get("progress", True))) and sys.stderr.isatty()


def prepare_extractors(cfg, bundle: DatasetBundle, device: torch.device, timings: dict) -> list[PreparedExtractor]:
    """Build (or load) every extractor of ``metrics.extractors`` and its real test features (cached by the images'
    content and the extractor's actual weights: a replaced file, or another process's differently trained
    extractor, never reuses these features)."""
    from medsynbench.metrics import FeatureCache, get_extractor

    mcfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    batch_size = mcfg.get("batch_size", 64)
    cache = FeatureCache(Path(cfg.paths.cache_dir) / "features")
    extractors = mcfg.get("extractors", [])
    train_split = full_train_split(cfg, bundle) if extractors else None  # loaded once for every extractor
    out = []
    for ext_cfg in extractors:
        ext_cfg = dict(ext_cfg)
        name = ext_cfg.pop("name")
        # an extractor entry may name its own metrics (e.g. Inception Score only on an extractor with logits)
        names = ext_cfg.pop("metrics", None) or list(mcfg.get("feature_metrics", []))
        log.info("evaluation: extractor %s (built once, then cached)", name)
        t0 = time.perf_counter()
        extractor = get_extractor(name, train_set=train_split,
                                  cache_dir=str(Path(cfg.paths.cache_dir) / "extractors"), device=str(device),
                                  seed=mcfg.get("seed", 0), **ext_cfg)
        timings[f"extractor_{name}_s"] = time.perf_counter() - t0
        desc = extractor.describe()
        key = {"dataset": bundle.name, "split": "test", "content": bundle.meta.get("test_content_sha256"),
               "ids": bundle.meta.get("test_ids_sha256"), "preprocessing": bundle.meta.get("preprocessing"),
               "extractor": desc, "weights_digest": extractor.weights_digest()}
        t0 = time.perf_counter()
        real_feats = cache.get_or_compute(
            key, lambda: extractor.features(bundle.test.images, batch_size=batch_size, device=str(device),
                                            progress=_progress(cfg)))
        timings[f"features_real_{name}_s"] = time.perf_counter() - t0  # cache hit: ~0
        out.append(PreparedExtractor(name, extractor, extractor.describe(), names, real_feats))
    return out


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
                       out_dir: Path | None = None, prepared: list[PreparedExtractor] | None = None,
                       downstream_synthetic: ImageSet | None = None, timings: dict | None = None,
                       balance_synthetic: ImageSet | None = None) -> dict:
    """All requested metrics from one feature pass per extractor (real features cached), then the downstream task
    (trained on ``downstream_synthetic``, default: ``synthetic`` itself, e.g. a folder's images). Artefacts (the
    memorisation closest-pairs grid) are written to ``out_dir`` when given and listed in the result. Each phase logs
    a line when it starts; ``timings`` gets the seconds of each extractor, feature pass, metric and scenario."""
    from medsynbench.benchmark.defaults import resolve_run_config
    from medsynbench.downstream import run_downstream
    from medsynbench.metrics import compute_feature_metrics, compute_image_metrics
    from medsynbench.metrics.collapse import detect_collapse

    cfg = resolve_run_config(cfg)
    mcfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    batch_size = mcfg.get("batch_size", 64)
    timings = {} if timings is None else timings
    metric_records: list[dict] = []
    artifacts: dict[str, str] = {}
    if prepared is None:
        prepared = prepare_extractors(cfg, bundle, device, timings)
    synthetic_feats = {}  # per extractor, for the feature-space maps
    for p in prepared:
        log.info("evaluation: %s features of %d synthetic images", p.name, len(synthetic))
        t0 = time.perf_counter()
        fake_feats = p.extractor.features(synthetic.images, batch_size=batch_size, device=str(device),
                                          progress=_progress(cfg))
        timings[f"features_synthetic_{p.name}_s"] = time.perf_counter() - t0
        synthetic_feats[p.name] = fake_feats
        for metric in p.metrics:  # one call each (prdc: its four numbers share one k-NN pass), each timed
            t0 = time.perf_counter()
            metric_records += compute_feature_metrics(p.real_feats, fake_feats, names=[metric], extractor=p.desc,
                                                      seed=mcfg.get("seed", 0), **mcfg.get("options", {}))
            timings[f"metric_{metric}_{p.name}_s"] = time.perf_counter() - t0
    for metric in mcfg.get("image_metrics") or []:
        log.info("evaluation: image metric %s", metric)
        t0 = time.perf_counter()
        metric_records += compute_image_metrics(bundle.test.images, synthetic.images, names=[metric],
                                                train_images=bundle.train.images, seed=mcfg.get("seed", 0),
                                                **mcfg.get("image_options", {}))
        timings[f"image_metric_{metric}_s"] = time.perf_counter() - t0
    if "memorisation" in (mcfg.get("image_metrics") or []) and out_dir is not None:
        from medsynbench.metrics.memorisation import closest_pairs_grid

        grid = Path(out_dir) / "memorisation_closest_pairs.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        closest_pairs_grid(synthetic.images, bundle.train.images, n=min(8, len(synthetic)), path=str(grid))
        artifacts["memorisation_grid"] = str(grid)
        for rec in metric_records:
            if rec.get("base_metric") == "memorisation":
                rec["grid"] = str(grid)

    downstream_synthetic = synthetic if downstream_synthetic is None else downstream_synthetic
    from medsynbench.downstream.config import parse_settings

    maps_cfg = parse_settings(cfg.downstream).maps
    models: dict | None = {} if (maps_cfg.enabled and maps_cfg.task_encoder) else None
    t0 = time.perf_counter()
    # real / real_augmented do not depend on the GAN: cached by content (downstream/cache.py), reused across a sweep
    downstream_records = run_downstream(cfg.downstream, real_train=bundle.train, synthetic=downstream_synthetic,
                                        real_test=bundle.test, num_mask_classes=bundle.num_mask_classes,
                                        num_classes=bundle.num_classes, device=str(device), seed=cfg.seed,
                                        balance_synthetic=balance_synthetic,
                                        cache_dir=Path(cfg.paths.cache_dir) / "downstream", models_out=models)
    timings["downstream_s"] = time.perf_counter() - t0
    for rec in downstream_records:  # one per condition (a condition's records share its seconds)
        timings[f"downstream_{rec['task']}@{rec['train_on']}_s"] = rec.get("seconds") or 0.0
    if maps_cfg.enabled and out_dir is not None:
        from medsynbench.benchmark.maps import feature_maps

        log.info("evaluation: feature-space maps (%s)", ", ".join(maps_cfg.methods))
        t0 = time.perf_counter()
        artifacts.update(feature_maps(cfg, maps_cfg, bundle, synthetic, prepared, synthetic_feats, models, device,
                                      Path(out_dir) / "maps"))
        timings["maps_s"] = time.perf_counter() - t0
    collapse = detect_collapse(metric_records)
    if collapse["collapsed"]:
        log.warning("generator flagged as collapsed: %s", "; ".join(collapse["reasons"]))
    for rec in metric_records:
        log.info("metric %s = %.5g (%s)", rec["metric"], rec["value"], rec.get("extractor"))
    for rec in downstream_records:
        if not rec.get("skipped"):
            log.info("downstream %s@%s = %.4f", rec["metric"], rec.get("train_on"), rec["value"])
    counts = {"n_real_test": len(bundle.test), "n_real_train": len(bundle.train), "n_synthetic_metrics": len(synthetic),
              "n_synthetic_downstream": {rec["train_on"]: rec["n_train_synthetic"] for rec in downstream_records
                                         if not rec.get("skipped") and rec.get("n_train_synthetic")}}
    return {"metrics": metric_records, "downstream": downstream_records, "timings": timings,
            "n_samples": len(synthetic), "sample_counts": counts, "artifacts": artifacts,
            "collapsed": collapse["collapsed"], "collapse_reasons": collapse["reasons"], "collapse_check": collapse}

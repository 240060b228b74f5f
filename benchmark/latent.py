"""``medsynbench project`` and ``medsynbench sefa``: latent-space analysis of a trained run or a model package.

``project`` inverts real images (a split of the run's dataset, or a folder) into the generator's latent space
(:mod:`medsynbench.gans.latent.projection`) and measures authenticity by projection, as the dermatology study §4.3
does: in an embedding (an extractor's features; cosine or L2) it compares each real image with its projection and
with its nearest synthetic sample. **Rule for "too close"**: a real image's projection (or nearest synthetic sample)
is too close when its distance to the real image is below Q1, the first quartile of the real-to-real nearest-neighbour
distances (each real image to its nearest *other* real image of the same set, same embedding). The fraction of
projections closer to their real image than that image's nearest other real image is reported beside it (the study's
"the closest neighbour was the projection of the target image"). Outputs go to ``out_dir`` (default
``<run_dir>/latent/project-<hash>``) and one record into the results store under the run's training id, with its
protocol (evaluation id ``latent-project-<hash>``).

``sefa`` computes the top-k SeFa directions (:mod:`medsynbench.gans.latent.sefa`), edit grids along them (image and
mask rows), latent walks between seeds and across classes, and a static slider page (``slider.html``, frames embedded).
"""
from __future__ import annotations

import base64
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from medsynbench.benchmark.config import PathsConfig
from medsynbench.benchmark.utils import atomic_write_bytes, atomic_write_json, resolve_device, stable_hash
from medsynbench.benchmark.validate import ConfigError
from medsynbench.io import atomic_torch_save

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


# --- config schemas ------------------------------------------------------------------------------------------------
@dataclass
class ProjectionLossConfig:
    extractor: str = "lpips_vgg16"     # lpips_vgg16 (local VGG16 weights) | any registered extractor (keep it apart
                                       # from embedding.extractor: distances in the optimised space are biased low)
    distance: str = "l2"               # l2 | cosine (feature distance of a registered extractor)
    vgg_weights_path: Optional[str] = None  # lpips_vgg16: torchvision vgg16 state dict (vgg16-397923af.pth)
    options: dict[str, Any] = field(default_factory=dict)  # extractor options (e.g. weights_path, steps)
    feature_weight: float = 1.0
    pixel_weight: float = 0.1          # mean squared pixel difference ([-1, 1] scale)


@dataclass
class EmbeddingConfig:
    extractor: str = "unet_encoder"    # feature space of the authenticity distances (any registered extractor)
    metric: str = "cosine"             # cosine | l2
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProjectConfig:
    run_dir: Optional[str] = None      # a run directory (results/runs/<training id>) ...
    package: Optional[str] = None      # ... or a model package folder (benchmark/zoo)
    step: Optional[int] = None         # checkpoint step of a run (null = the latest valid)
    images: str = "test"               # train | val | test (the run's dataset) or a folder of images
    n_images: Optional[int] = None     # first N images of the set (null = all)
    dataset_root: Optional[str] = None # where the run's dataset lives now (null = its config's root)
    space: str = "auto"                # auto (w for style-based, else z) | z | w | w+
    steps: int = 100
    lr: float = 0.05
    batch_size: int = 32
    chunk_size: int = 64               # images per saved chunk (resume unit)
    w_avg_samples: int = 1000
    seed: int = 0
    loss: ProjectionLossConfig = field(default_factory=ProjectionLossConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    n_synthetic: Optional[int] = None  # synthetic samples for the nearest-synthetic distance (null = n images)
    n_closest: int = 8                 # rows of the closest-cases grid
    out_dir: Optional[str] = None      # null = <run_dir>/latent/project-<hash> (package: results/latent/...)
    record: bool = True                # write a record into the results store
    device: str = "auto"
    num_threads: Optional[int] = None
    progress: bool = True
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class SefaConfig:
    run_dir: Optional[str] = None
    package: Optional[str] = None
    step: Optional[int] = None
    k: int = 5                         # directions
    layers: str = "first"              # first | all (style-based: which style modulations make A)
    normalize: bool = True             # unit-norm rows of A first (as the official SeFa code)
    strengths: list[float] = field(default_factory=lambda: [-3.0, -1.5, 0.0, 1.5, 3.0])
    seed: int = 0                      # seeds seed .. seed + n_seeds - 1 are edited
    n_seeds: int = 4
    walk_frames: int = 9               # frames of the seed walk, and of each slider
    out_dir: Optional[str] = None      # null = <run_dir>/latent/sefa-<hash>
    device: str = "auto"
    num_threads: Optional[int] = None
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_latent_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="project_schema", node=ProjectConfig)
    cs.store(name="sefa_schema", node=SefaConfig)


# --- loading ---------------------------------------------------------------------------------------------------------
def load_source(cfg, device):
    """(gan, run config or None, training id, run dir or None) of ``run_dir=`` or ``package=``."""
    if bool(cfg.run_dir) == bool(cfg.package):
        raise ConfigError("give exactly one of run_dir=<run directory> or package=<model package folder>")
    if cfg.run_dir:
        from medsynbench.benchmark.reevaluate import load_run
        from medsynbench.checkpoints import checkpoint_path

        run_dir = Path(cfg.run_dir)
        if not run_dir.is_dir():
            raise ConfigError(f"run_dir={run_dir}: no such directory")
        ckpt = checkpoint_path(run_dir, int(cfg.step)) if cfg.step is not None else None
        run_cfg, gan, _ = load_run(run_dir, device, ckpt)
        return gan.eval(), run_cfg, run_dir.name, run_dir
    try:
        from medsynbench.benchmark.zoo import load_generator
    except ImportError as err:
        raise ConfigError(f"package= needs medsynbench.benchmark.zoo.load_generator ({err})") from err
    if not Path(cfg.package).is_dir():
        raise ConfigError(f"package={cfg.package}: no such folder")
    gan, meta = load_generator(cfg.package, device)
    tid = (meta.get("source") or {}).get("training_id") or f"package-{meta.get('id', Path(cfg.package).name)}"
    return gan.eval(), None, tid, None


def _set_threads(cfg) -> None:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))


def load_targets(cfg, run_cfg, gan):
    """(ImageSet of the real images to project, dataset bundle or None)."""
    from medsynbench.benchmark.data import load_dataset

    bundle = None
    if run_cfg is not None:
        if cfg.dataset_root:
            run_cfg.dataset.root = cfg.dataset_root
        need_bundle = cfg.images in SPLITS or cfg.embedding.extractor == "unet_encoder" \
            or cfg.loss.extractor == "unet_encoder"
        if need_bundle:
            bundle = load_dataset(run_cfg.dataset, run_cfg.data)
    if cfg.images in SPLITS:
        if bundle is None:
            raise ConfigError(f"images={cfg.images} names a split of the run's dataset, but a package has no dataset "
                              "config: give images=<folder of images>")
        images = getattr(bundle, cfg.images)
        if images is None or len(images) == 0:
            raise ConfigError(f"images={cfg.images}: the dataset {bundle.name} has no {cfg.images} split")
    else:
        from medsynbench.benchmark.evaluate_folder import load_image_folder

        folder = Path(cfg.images)
        if not folder.is_dir():
            raise ConfigError(f"images={cfg.images}: not a split name ({', '.join(SPLITS)}) nor a folder")
        data_cfg = run_cfg.data if run_cfg is not None else {
            "image_size": gan.image_size, "color": "grayscale" if gan.image_channels == 1 else "rgb"}
        images = load_image_folder(folder, data_cfg, progress=cfg.progress)
    if cfg.n_images is not None:
        if cfg.n_images < 1:
            raise ConfigError(f"n_images must be >= 1, got {cfg.n_images}")
        images = images.subset(torch.arange(min(cfg.n_images, len(images))))
    if images.channels != gan.image_channels or images.images.shape[-1] != gan.image_size:
        raise ConfigError(f"images={cfg.images}: {images.channels}-channel {images.images.shape[-1]} px images, but "
                          f"the generator makes {gan.image_channels}-channel {gan.image_size} px images")
    return images, bundle


def _extractor(name: str, options: dict, bundle, run_cfg, paths, device):
    from medsynbench.metrics import get_extractor

    if name == "unet_encoder" and bundle is None:
        raise ConfigError("extractor unet_encoder is trained on the run's real training split; with a package choose "
                          "another extractor (embedding.extractor= / loss.extractor=, e.g. torchvision:<arch> with "
                          "options.weights_path)")
    context = {"device": str(device), "seed": 0, "cache_dir": str(Path(paths.cache_dir) / "extractors")}
    if bundle is not None:
        from medsynbench.benchmark.evaluate import full_train_split

        context["train_set"] = full_train_split(run_cfg, bundle)
    if name == "unet_encoder" and run_cfg is not None:  # the run's own metric extractor settings when it has them
        for ext in (OmegaConf.to_container(run_cfg.metrics, resolve=True) or {}).get("extractors", []):
            if ext.get("name") == "unet_encoder":
                options = {**{k: v for k, v in ext.items() if k not in ("name", "metrics")}, **options}
                context["seed"] = run_cfg.metrics.get("seed", 0)
                break
    try:
        return get_extractor(name, **context, **options)
    except KeyError as err:
        raise ConfigError(str(err).strip('"')) from err


# --- distances -------------------------------------------------------------------------------------------------------
def pairwise(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if metric == "cosine":
        an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (1 - an @ bn.T).clamp_min(0)
    if metric == "l2":
        return torch.cdist(a, b)
    raise ConfigError(f"embedding.metric must be cosine or l2, got {metric!r}")


def authenticity(real: torch.Tensor, projected: torch.Tensor, synthetic: torch.Tensor, metric: str) -> dict:
    """Per real image: distance to its projection, to its nearest synthetic sample and to its nearest other real
    image; Q1 of the latter and the "too close" flags (see the module docstring for the rule)."""
    if len(real) < 2:
        raise ConfigError("authenticity needs at least 2 real images (real-to-real distances)")
    d_proj = pairwise(real, projected, metric).diagonal().clone()
    d_syn_all = pairwise(real, synthetic, metric)
    d_syn, nn_syn = d_syn_all.min(dim=1)
    d_rr = pairwise(real, real, metric)
    d_rr.fill_diagonal_(float("inf"))
    d_real, nn_real = d_rr.min(dim=1)
    q1 = float(torch.quantile(d_real, 0.25))
    return {"d_projection": d_proj.numpy(), "d_nearest_synthetic": d_syn.numpy(), "nearest_synthetic": nn_syn.numpy(),
            "d_nearest_real": d_real.numpy(), "nearest_real": nn_real.numpy(), "q1_real_real": q1,
            "too_close": (d_proj < q1).numpy(), "synthetic_too_close": (d_syn < q1).numpy(),
            "projection_is_nearest": (d_proj < d_real).numpy()}


def describe_distribution(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x)),
            "q1": float(np.quantile(x, 0.25)), "q3": float(np.quantile(x, 0.75)), "min": float(x.min()),
            "max": float(x.max()), "n": int(len(x))}


# --- figures ---------------------------------------------------------------------------------------------------------
def _mask_as_image(masks: torch.Tensor, channels: int) -> torch.Tensor:
    m = masks.float()
    m = m / max(1.0, float(m.max())) * 2 - 1
    return m[:, None].repeat(1, channels, 1, 1)


def save_rows(path: Path, rows: list[torch.Tensor], scale: int = 1) -> None:
    """Save image rows ([n, C, H, W] each, [-1, 1]) as one PNG grid, one row per tensor."""
    import torchvision.utils as vutils

    ncol = max(len(r) for r in rows)
    c = rows[0].shape[1]
    padded = [torch.cat([r, -torch.ones(ncol - len(r), *r.shape[1:])]) if len(r) < ncol else r for r in rows]
    grid = torch.cat([r[:, :3] if c >= 3 else r.repeat(1, 3 // c, 1, 1) for r in padded])
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    vutils.save_image((grid + 1) / 2, buf, nrow=ncol, padding=2, pad_value=1.0, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _loss_curve_figure(path: Path, curves: np.ndarray, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = np.arange(curves.shape[1])
    q1, med, q3 = np.quantile(curves, [0.25, 0.5, 0.75], axis=0)
    ax.fill_between(steps, q1, q3, alpha=0.3, label="interquartile range")
    ax.plot(steps, med, label="median over images")
    for c in curves[:5]:
        ax.plot(steps, c, lw=0.5, alpha=0.5, color="grey")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    _finish_figure(fig, ax, path, title)


def _finish_figure(fig, ax, path: Path, title: str) -> None:
    """Title and legend, then the PNG written atomically."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _histogram(path: Path, dist: dict, metric: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("d_projection", "real → its projection"), ("d_nearest_synthetic", "real → nearest synthetic"),
                       ("d_nearest_real", "real → nearest other real")):
        ax.hist(dist[key], bins=40, alpha=0.5, label=label)
    ax.axvline(dist["q1_real_real"], color="k", ls="--", lw=1, label="Q1 real-real (too-close threshold)")
    ax.set_xlabel(f"{metric} distance")
    ax.set_ylabel("images")
    _finish_figure(fig, ax, path, title)


# --- project ---------------------------------------------------------------------------------------------------------
def project_command(cfg) -> dict:
    """Project real images, measure authenticity, write outputs and a results-store record; returns the summary."""
    from medsynbench.gans.latent import ProjectionSettings, project_chunked
    from medsynbench.gans.latent.losses import ExtractorLoss, LPIPSLoss

    _set_threads(cfg)
    device = resolve_device(cfg.device)
    gan, run_cfg, tid, run_dir = load_source(cfg, device)
    try:
        settings = ProjectionSettings(space=cfg.space, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                                      seed=cfg.seed, feature_weight=cfg.loss.feature_weight,
                                      pixel_weight=cfg.loss.pixel_weight, w_avg_samples=cfg.w_avg_samples)
        from medsynbench.gans.latent import resolve_space
        space = resolve_space(gan, cfg.space)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    images, bundle = load_targets(cfg, run_cfg, gan)
    t0 = time.perf_counter()

    # the projection loss
    if settings.feature_weight > 0:
        if cfg.loss.extractor == "lpips_vgg16":
            try:
                loss_fn = LPIPSLoss(cfg.loss.vgg_weights_path, device=str(device))
            except RuntimeError as err:  # missing / wrong weights: says how to provide them
                raise ConfigError(f"loss.extractor=lpips_vgg16 (the default): {err} Or project with another "
                                  "feature space: loss.extractor=<a registered extractor>, e.g. random_cnn, with "
                                  "loss.pixel_weight=1") from err
        else:
            ext = _extractor(cfg.loss.extractor, OmegaConf.to_container(cfg.loss.options, resolve=True), bundle,
                             run_cfg, cfg.paths, device)
            loss_fn = ExtractorLoss(ext, distance=cfg.loss.distance, device=str(device))
        loss_desc = loss_fn.describe()
    else:
        loss_fn, loss_desc = None, {"name": "none"}
    loss_key = {k: v for k, v in loss_desc.items() if k != "weights"}
    if hasattr(loss_fn, "extractor"):
        loss_key["weights_digest"] = loss_fn.extractor.weights_digest()
    protocol = {"command": "project", "space": space, "settings": asdict(settings), "loss": loss_key,
                "embedding": {"extractor": cfg.embedding.extractor, "metric": cfg.embedding.metric,
                              "options": OmegaConf.to_container(cfg.embedding.options, resolve=True)},
                "images": cfg.images, "n_images": len(images), "n_synthetic": cfg.n_synthetic or len(images),
                "step": cfg.step,
                "too_close_rule": "distance(real, x) < Q1 of the real-to-real nearest-neighbour distances "
                                  "(same images, same embedding)"}
    key = stable_hash(protocol)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else \
        (run_dir / "latent" / f"project-{key}" if run_dir else Path(cfg.paths.results_dir) / "latent" / tid /
         f"project-{key}")
    out_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm
    bar = tqdm(total=len(images), desc="project", unit="img", disable=not cfg.progress)
    t_proj = time.perf_counter()
    result = project_chunked(gan, images.images, loss_fn, settings, out_dir / "chunks", chunk_size=cfg.chunk_size,
                             labels=images.labels if gan.num_classes else None,
                             masks=images.masks if getattr(gan, "takes_masks", False) else None,
                             loss_key=loss_key, progress=bar.update)
    bar.close()
    proj_s = time.perf_counter() - t_proj
    log.info("projected %d images (%d chunks reused, %d projected) in %.1f s", len(images), result["reused_chunks"],
             result["projected_chunks"], proj_s)

    # authenticity in the embedding
    from medsynbench.benchmark.evaluate import sample_imageset

    n_syn = cfg.n_synthetic or len(images)
    if bundle is not None:
        synthetic = sample_imageset(gan, n_syn, seed=cfg.seed + 3_000_017, bundle=bundle, batch_size=64)
    else:
        synthetic_images = gan.sample(n_syn, seed=cfg.seed + 3_000_017)["images"]
        from medsynbench.types import ImageSet
        synthetic = ImageSet(images=synthetic_images)
    emb = _extractor(cfg.embedding.extractor, OmegaConf.to_container(cfg.embedding.options, resolve=True), bundle,
                     run_cfg, cfg.paths, device)
    feats = {name: torch.from_numpy(emb.features(x, device=str(device), progress=False))
             for name, x in (("real", images.images), ("projected", result["images"]),
                             ("synthetic", synthetic.images))}
    dist = authenticity(feats["real"], feats["projected"], feats["synthetic"], cfg.embedding.metric)
    emb_desc = emb.describe()

    # outputs
    ids = images.ids or [f"image_{i:06d}" for i in range(len(images))]
    lat = result["latents"]
    atomic_torch_save({"code": lat.code, "space": lat.space, "labels": lat.labels, "masks": lat.masks,
                       "noise_seeds": lat.noise_seeds, "ids": ids}, out_dir / "latents.pt")
    atomic_torch_save({k: result[k] for k in ("images", "masks") if k in result}, out_dir / "projected.pt")
    np.save(out_dir / "loss_curves.npy", result["loss_curve"].numpy())
    import pandas as pd

    table = pd.DataFrame({"id": ids, "d_projection": dist["d_projection"],
                          "d_nearest_synthetic": dist["d_nearest_synthetic"],
                          "nearest_synthetic": dist["nearest_synthetic"], "d_nearest_real": dist["d_nearest_real"],
                          "nearest_real": [ids[i] for i in dist["nearest_real"]], "too_close": dist["too_close"],
                          "projection_is_nearest": dist["projection_is_nearest"],
                          "synthetic_too_close": dist["synthetic_too_close"],
                          "final_loss": result["final_loss"].numpy(),
                          "final_feature_loss": result["final_feature_loss"].numpy(),
                          "final_pixel_loss": result["final_pixel_loss"].numpy(),
                          "initial_loss": result["loss_curve"][:, 0].numpy()})
    atomic_write_bytes(out_dir / "distances.csv", table.to_csv(index=False).encode())
    title = f"{tid[:40]} | {space} | loss {loss_desc.get('name')} | emb {emb_desc.get('name')} ({cfg.embedding.metric})"
    _loss_curve_figure(out_dir / "loss_curves.png", result["loss_curve"].numpy(), title)
    _histogram(out_dir / "distances.png", dist, cfg.embedding.metric, title)
    c = gan.image_channels
    n_show = min(12, len(images))
    rows = [images.images[:n_show], result["images"][:n_show]]
    if "masks" in result and images.masks is not None:
        rows = [rows[0], _mask_as_image(images.masks[:n_show], c), rows[1], _mask_as_image(result["masks"][:n_show], c)]
    save_rows(out_dir / "projections.png", rows, scale=2)
    order = np.argsort(dist["d_projection"])[:cfg.n_closest]
    closest = []
    for i in order:
        closest.append(torch.stack([images.images[i], result["images"][i],
                                    synthetic.images[int(dist["nearest_synthetic"][i])]]))
    save_rows(out_dir / "closest.png", [torch.stack([t[j] for t in closest]) for j in range(3)], scale=2)

    summary = {
        "training_id": tid, "run_dir": str(run_dir) if run_dir else None, "package": cfg.package,
        "out_dir": str(out_dir), "protocol": protocol, "projection_loss": loss_desc, "embedding": emb_desc,
        "distance_to_projection": describe_distribution(dist["d_projection"]),
        "distance_to_nearest_synthetic": describe_distribution(dist["d_nearest_synthetic"]),
        "distance_real_to_nearest_real": describe_distribution(dist["d_nearest_real"]),
        "q1_real_real": dist["q1_real_real"],
        # distances in the very space the projection optimised are biased low: say so in the summary and record
        "embedding_is_projection_space": bool(settings.feature_weight > 0
                                              and loss_desc.get("name") == emb_desc.get("name")),
        "fraction_too_close": float(dist["too_close"].mean()), "n_too_close": int(dist["too_close"].sum()),
        "fraction_projection_is_nearest": float(dist["projection_is_nearest"].mean()),
        "fraction_synthetic_too_close": float(dist["synthetic_too_close"].mean()),
        "loss": {"initial": describe_distribution(result["loss_curve"][:, 0].numpy()),
                 "final": describe_distribution(result["final_loss"].numpy())},
        "chunks": {"reused": result["reused_chunks"], "projected": result["projected_chunks"]},
        "timings": {"projection_s": proj_s, "total_s": time.perf_counter() - t0},
        "files": {k: str(out_dir / v) for k, v in (
            ("latents", "latents.pt"), ("projected", "projected.pt"), ("loss_curves", "loss_curves.npy"),
            ("loss_curves_png", "loss_curves.png"), ("distances", "distances.csv"),
            ("distances_png", "distances.png"), ("projections_png", "projections.png"),
            ("closest_png", "closest.png"))},
    }
    if summary["embedding_is_projection_space"]:
        log.warning("the authenticity embedding (%s) is the feature space the projection optimised: distances to the "
                    "projections are biased low; choose another embedding.extractor or loss.extractor",
                    emb_desc.get("name"))
    atomic_write_json(out_dir / "summary.json", summary)
    if cfg.record:
        summary["record"] = str(_write_project_record(cfg, run_cfg, tid, run_dir, key, summary, emb_desc))
    return summary


def _write_project_record(cfg, run_cfg, tid: str, run_dir, key: str, summary: dict, emb_desc: dict):
    from medsynbench.benchmark.store import flatten_config, write_record
    from medsynbench.benchmark.utils import git_commit, package_versions

    suffix = emb_desc.get("metric_suffix") or str(emb_desc.get("name"))
    metric = cfg.embedding.metric
    protocol = summary["protocol"]
    common = {"extractor": emb_desc, "embedding_metric": metric, "projection_loss": summary["projection_loss"],
              "embedding_is_projection_space": summary["embedding_is_projection_space"],
              "protocol": protocol, "n_images": protocol["n_images"], "too_close_rule": protocol["too_close_rule"],
              "artifacts": summary["files"]}
    metrics = [
        {**common, "metric": f"projection_distance_{metric}_{suffix}", "value": summary["distance_to_projection"]["mean"],
         **{k: v for k, v in summary["distance_to_projection"].items() if k != "mean"}, "higher_is_better": True},
        {**common, "metric": f"projection_too_close_{suffix}", "value": summary["fraction_too_close"],
         "n_too_close": summary["n_too_close"], "q1_real_real": summary["q1_real_real"], "higher_is_better": False},
        {**common, "metric": f"projection_is_nearest_{suffix}", "value": summary["fraction_projection_is_nearest"],
         "higher_is_better": False},
        {**common, "metric": f"nearest_synthetic_distance_{metric}_{suffix}",
         "value": summary["distance_to_nearest_synthetic"]["mean"],
         **{k: v for k, v in summary["distance_to_nearest_synthetic"].items() if k != "mean"},
         "higher_is_better": True},
        {**common, "metric": "projection_final_loss", "value": summary["loss"]["final"]["mean"],
         "median": summary["loss"]["final"]["median"], "higher_is_better": False},
    ]
    config = flatten_config(run_cfg) if run_cfg is not None else {}
    config.update({f"latent.{k}": v for k, v in flatten_config(
        {"command": "project", "space": protocol["space"], "images": cfg.images, "n_images": protocol["n_images"],
         "steps": cfg.steps, "lr": cfg.lr, "loss": OmegaConf.to_container(cfg.loss, resolve=True),
         "embedding": OmegaConf.to_container(cfg.embedding, resolve=True), "seed": cfg.seed}).items()})
    record = {"run_id": tid, "training_id": tid, "evaluation_id": f"latent-project-{key}",
              "run_dir": str(run_dir) if run_dir else cfg.package, "status": "completed", "config": config,
              "experiment": config.get("experiment_name", "latent"), "seed": config.get("seed"),
              "dataset": config.get("dataset.name"), "gan": config.get("gan.name"),
              "train_size": config.get("data.train_size"), "metrics": metrics, "downstream": [],
              "latent_projection": {k: summary[k] for k in ("distance_to_projection", "distance_to_nearest_synthetic",
                                                             "distance_real_to_nearest_real", "q1_real_real",
                                                             "fraction_too_close", "fraction_projection_is_nearest",
                                                             "fraction_synthetic_too_close", "loss", "out_dir")},
              "versions": package_versions(), "git_commit": git_commit(), "timings": summary["timings"]}
    return write_record(cfg.paths.store_dir, record)


# --- sefa ------------------------------------------------------------------------------------------------------------
def _png_data_uri(images: torch.Tensor, masks: torch.Tensor | None, channels: int, scale: int = 4) -> str:
    """One frame (image, and its mask beside it) as a data URI."""
    import torchvision.utils as vutils

    tiles = [images]
    if masks is not None:
        tiles.append(_mask_as_image(masks, channels))
    grid = torch.cat([t[:, :3] if channels >= 3 else t.repeat(1, 3 // channels, 1, 1) for t in tiles])
    grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    buf = io.BytesIO()
    vutils.save_image((grid + 1) / 2, buf, nrow=len(grid), padding=2, pad_value=1.0, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


SLIDER_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}} .s{{margin:1em 0;padding:.5em;border:1px solid #ccc}}
img{{image-rendering:pixelated}} label{{font-size:.9em}}</style></head><body>
<h2>{title}</h2><p>{intro}</p>{sliders}
<script>
const FRAMES = {frames};
document.querySelectorAll('input[type=range]').forEach(r => {{
  const show = () => {{ const f = FRAMES[r.dataset.key][r.value];
    document.getElementById(r.dataset.key + '-img').src = f[0];
    document.getElementById(r.dataset.key + '-lab').textContent = f[1]; }};
  r.addEventListener('input', show); show(); }});
</script></body></html>"""


def write_slider_page(path: Path, title: str, intro: str, sliders: dict[str, tuple[str, list[tuple[str, str]]]]):
    """A self-contained HTML page: one range slider per entry, switching precomputed frames (data URIs)."""
    import html

    blocks, frames = [], {}
    for i, (heading, items) in enumerate(sliders.values()):
        key = f"s{i}"
        frames[key] = items
        mid = (len(items) - 1) // 2
        blocks.append(f'<div class="s"><b>{html.escape(heading)}</b><br><input type="range" min="0" '
                      f'max="{len(items) - 1}" value="{mid}" data-key="{key}" style="width:300px"> '
                      f'<label id="{key}-lab"></label><br><img id="{key}-img"></div>')
    text = SLIDER_HTML.format(title=html.escape(title), intro=html.escape(intro), sliders="\n".join(blocks),
                              frames=json.dumps(frames))
    atomic_write_bytes(path, text.encode())


def sefa_command(cfg) -> dict:
    """SeFa directions, edit grids, walks and the slider page of a run or package."""
    from medsynbench.gans.latent import class_walk, edit_grid, seed_walk, sefa

    _set_threads(cfg)
    device = resolve_device(cfg.device)
    gan, _, tid, run_dir = load_source(cfg, device)
    strengths = [float(s) for s in cfg.strengths]
    if not strengths:
        raise ConfigError("strengths must list at least one value, e.g. strengths=[-3,0,3]")
    if cfg.n_seeds < 1:
        raise ConfigError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    try:
        fac = sefa(gan, k=int(cfg.k), layers=cfg.layers, normalize=cfg.normalize)
    except ValueError as err:
        raise ConfigError(f"sefa: {err}") from err
    key = stable_hash({"k": cfg.k, "layers": cfg.layers, "normalize": cfg.normalize, "strengths": strengths,
                       "seed": cfg.seed, "n_seeds": cfg.n_seeds, "step": cfg.step})
    out_dir = Path(cfg.out_dir) if cfg.out_dir else \
        (run_dir / "latent" / f"sefa-{key}" if run_dir else Path(cfg.paths.results_dir) / "latent" / tid / f"sefa-{key}")
    out_dir.mkdir(parents=True, exist_ok=True)
    space = fac["space"]
    atomic_torch_save({k: fac[k] for k in ("directions", "eigenvalues", "eigenvalues_all", "space", "layers")},
                      out_dir / "directions.pt")
    grid = edit_grid(gan, fac["directions"], strengths, seed=cfg.seed, n_seeds=cfg.n_seeds, space=space)
    c = gan.image_channels
    files = {}
    # one grid per direction: rows = seeds (image row, then its mask row), columns = strengths
    for d in range(len(fac["directions"])):
        rows = []
        for s in range(cfg.n_seeds):
            rows.append(grid["images"][d, s])
            if "masks" in grid:
                rows.append(_mask_as_image(grid["masks"][d, s], c))
        path = out_dir / f"sefa_direction_{d}.png"
        save_rows(path, rows, scale=2)
        files[f"direction_{d}"] = str(path)
    # overview: rows = directions (first seed), columns = strengths
    rows = []
    for d in range(len(fac["directions"])):
        rows.append(grid["images"][d, 0])
        if "masks" in grid:
            rows.append(_mask_as_image(grid["masks"][d, 0], c))
    save_rows(out_dir / "sefa_grid.png", rows, scale=2)
    files["grid"] = str(out_dir / "sefa_grid.png")

    # slider page: each direction for the first seed, a seed walk, and a class walk for conditional models
    n_f = max(2, int(cfg.walk_frames))
    lim = max(abs(s) for s in strengths) or 1.0
    fine = torch.linspace(-lim, lim, n_f).tolist()
    fine_grid = edit_grid(gan, fac["directions"], fine, seed=cfg.seed, n_seeds=1, space=space)
    sliders = {}
    for d in range(len(fac["directions"])):
        items = [(_png_data_uri(fine_grid["images"][d, 0, j:j + 1],
                                fine_grid["masks"][d, 0, j:j + 1] if "masks" in fine_grid else None, c),
                  f"strength {v:+.2f}") for j, v in enumerate(fine)]
        sliders[f"dir{d}"] = (f"SeFa direction {d} (eigenvalue {float(fac['eigenvalues'][d]):.3g}), seed {cfg.seed}",
                              items)
    walk = seed_walk(gan, cfg.seed, cfg.seed + 1, n_frames=n_f)
    sliders["walk"] = (f"walk from seed {cfg.seed} to seed {cfg.seed + 1} ({'lerp in w' if space == 'w' else 'slerp in z'})",
                       [(_png_data_uri(walk["images"][j:j + 1], walk["masks"][j:j + 1] if "masks" in walk else None,
                                       c), f"t = {t:.2f}") for j, t in enumerate(walk["t"])])
    if gan.num_classes:
        cw = class_walk(gan, cfg.seed, n_frames=max(2, n_f // 2))
        sliders["classes"] = (f"seed {cfg.seed} across class conditions",
                              [(_png_data_uri(cw["images"][j:j + 1], cw["masks"][j:j + 1] if "masks" in cw else None,
                                              c), f"class {lab}") for j, lab in enumerate(cw["labels"])])
    write_slider_page(out_dir / "slider.html", f"Latent sliders: {tid}",
                      f"SeFa directions in {space} space (layers: {', '.join(fac['layers'])}); each frame shows the "
                      "image and, for image+mask models, its generated mask.", sliders)
    files["slider"] = str(out_dir / "slider.html")
    summary = {"training_id": tid, "out_dir": str(out_dir), "space": space, "layers": fac["layers"],
               "eigenvalues": [float(v) for v in fac["eigenvalues"]], "strengths": strengths,
               "seeds": list(range(cfg.seed, cfg.seed + cfg.n_seeds)), "files": files}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary

"""Fréchet distance over a run's checkpoints (training curves): did the GAN improve between snapshots?"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from medsynbench.checkpoints import CheckpointError, checkpoint_paths, checkpoint_step

log = logging.getLogger(__name__)


def fd_over_checkpoints(run_dir: str | Path, extractor: dict | None = None, n_samples: int | None = None,
                        device: str = "cpu", cache_dir: str | Path | None = None) -> list[dict]:
    """For every ``checkpoints/step_*.pt`` of a run: sample ``n_samples`` (default: size of the real test split)
    with the EMA generator and compute the Fréchet distance to the real test split in the feature space of
    ``extractor`` (default: the run's first configured extractor). Returns one row per checkpoint."""
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.evaluate import full_train_split, sample_imageset
    from medsynbench.benchmark.reevaluate import load_run
    from medsynbench.metrics import frechet_distance, get_extractor

    run_dir = Path(run_dir)
    dev = torch.device(device)
    cfg, _, _ = load_run(run_dir, dev)
    bundle = load_dataset(cfg.dataset, cfg.data)
    ext_cfg = dict(extractor or OmegaConf.to_container(cfg.metrics, resolve=True)["extractors"][0])
    name = ext_cfg.pop("name")
    cache_dir = Path(cache_dir or Path(cfg.paths.cache_dir)) / "extractors"
    ext = get_extractor(name, train_set=full_train_split(cfg, bundle), cache_dir=str(cache_dir), device=device,
                        seed=cfg.metrics.get("seed", 0), **ext_cfg)
    real = ext.features(bundle.test.images, device=device, progress=False)
    n = n_samples or len(bundle.test)
    rows = []
    for path in checkpoint_paths(run_dir):
        step = checkpoint_step(path)
        try:
            _, gan, _ = load_run(run_dir, dev, checkpoint=path)
        except CheckpointError as exc:
            log.warning("skipping %s", exc)
            continue
        gan.eval()
        fake = sample_imageset(gan, n, seed=cfg.seed + 1_000_003, bundle=bundle, batch_size=64)
        fd = frechet_distance(real, ext.features(fake.images, device=device, progress=False))
        rows.append({"step": step, "fd": float(fd), "extractor": ext.describe()["name"], "n_real": len(real),
                     "n_fake": n})
        log.info("step %d: fd_%s = %.4f", step, name, fd)
    return rows

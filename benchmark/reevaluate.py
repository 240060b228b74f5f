"""``medsynbench evaluate``: rebuild everything from a run directory alone and evaluate it again."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmark.store import append_record, flatten_config
from benchmark.utils import git_commit, package_versions, resolve_device

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path, device: torch.device, checkpoint: str | Path | None = None):
    """(config, gan, checkpoint path) of a run directory; the GAN is rebuilt from the checkpoint's model_args."""
    from benchmark.train_loop import latest_checkpoint
    from gans import build_from_args

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a medsynbench run directory")
    cfg = OmegaConf.load(cfg_path)
    ckpt_path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ckpt_path is None or not ckpt_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}: the run has not saved any step yet")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
    gan = build_from_args(ckpt["model_args"])
    gan.load_state_dict(ckpt["state_dict"])
    return cfg, gan.to(device), ckpt_path


def evaluate_run_dir(ecfg) -> dict:
    from benchmark.data import load_dataset
    from benchmark.evaluate import evaluate_gan

    device = resolve_device(ecfg.device)
    cfg, gan, ckpt_path = load_run(ecfg.run_dir, device)
    cfg = OmegaConf.merge(cfg, ecfg.overrides or {})
    cfg.paths = ecfg.paths
    bundle = load_dataset(cfg.dataset, cfg.data)
    t0 = time.perf_counter()
    evaluation = evaluate_gan(cfg, gan, bundle, device, Path(ecfg.run_dir))
    record = {
        "run_id": Path(ecfg.run_dir).name, "run_dir": str(ecfg.run_dir), "experiment": cfg.get("experiment_name"),
        "seed": cfg.seed, "dataset": cfg.dataset.name, "gan": cfg.gan.name, "train_size": cfg.data.train_size,
        "status": "completed", "evaluated_from": str(ckpt_path), "config": flatten_config(cfg), "data": bundle.meta,
        "versions": package_versions(), "git_commit": git_commit(), "device": str(device),
        "metrics": evaluation["metrics"], "downstream": evaluation["downstream"],
        "timings": {**evaluation["timings"], "total_s": time.perf_counter() - t0},
    }
    append_record(ecfg.paths.store_dir, record)
    return record

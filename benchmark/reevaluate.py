"""``medsynbench evaluate``: rebuild everything from a run directory alone and evaluate it again."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.store import write_record
from medsynbench.benchmark.utils import atomic_write_json, resolve_device
from medsynbench.checkpoints import checkpoint_path, checkpoint_step

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path, device: torch.device, checkpoint: str | Path | None = None):
    """(config, gan, checkpoint path) of a run directory; the GAN is rebuilt from the checkpoint's model_args.

    Checkpoints load weights-only and are verified (:mod:`medsynbench.checkpoints`); only registered GAN classes are
    built. With ``checkpoint`` that file is used or a :class:`CheckpointError` names what is wrong with it; without,
    the newest valid checkpoint is used, skipping invalid ones with a warning that names each."""
    from medsynbench.gans import build_from_args
    from medsynbench.checkpoints import CheckpointError, checkpoint_paths, latest_valid_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a medsynbench run directory")
    cfg = OmegaConf.load(cfg_path)
    if checkpoint:
        ckpt_path = Path(checkpoint)
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_path} not found")
        ckpt = load_checkpoint(ckpt_path, map_location=device)
    else:
        problems: list[str] = []
        found = latest_valid_checkpoint(run_dir, map_location=device, skipped=problems)
        if found is None:
            have = checkpoint_paths(run_dir)
            if not have:
                raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}: "
                                        "the run has not saved any step yet")
            raise CheckpointError(have[-1], f"no valid checkpoint in {run_dir / 'checkpoints'}; "
                                            + "; ".join(problems))
        ckpt_path, ckpt = found
    try:
        gan = build_from_args(ckpt["model_args"])
    except ValueError as exc:
        raise CheckpointError(ckpt_path, str(exc)) from exc
    gan.load_state_dict(ckpt["state_dict"])
    return cfg, gan.to(device), ckpt_path


def evaluate_run_dir(ecfg) -> dict:
    """Evaluate a run directory's checkpoint (the last, or ``step``) with its own config, changed by ``overrides``.

    The record is stored under (the run's training id, the evaluation id of the merged config and the step), so
    evaluating the same way twice replaces the record rather than adding a copy."""
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.evaluate import EVALUATION_FIELDS, evaluate_gan
    from medsynbench.benchmark.run import base_record, evaluation_id

    device = resolve_device(ecfg.device)
    run_dir = Path(ecfg.run_dir)
    checkpoint = None
    if ecfg.get("step") is not None:
        checkpoint = checkpoint_path(run_dir, int(ecfg.step))
    cfg, gan, ckpt_path = load_run(run_dir, device, checkpoint)
    step = checkpoint_step(ckpt_path)  # load_run verified that the file's step matches its name
    cfg = OmegaConf.merge(cfg, ecfg.overrides or {})
    cfg.paths = ecfg.paths
    cfg.evaluate = True
    cfg.evaluate_step = None if step == cfg.train.steps else step  # null = the last step, as `train` records it
    bundle = load_dataset(cfg.dataset, cfg.data)
    training_file = run_dir / "training.json"
    if training_file.is_file():  # the data must be what the generator was trained on
        trained_on = json.loads(training_file.read_text()).get("data", {})
        for key, value in trained_on.items():
            if value and bundle.meta.get(key) != value:
                raise ValueError(f"{run_dir}: the data under dataset.root={cfg.dataset.root} is not the data this run "
                                 f"was trained on ({key} {bundle.meta.get(key)} != {value}); point dataset.root at "
                                 "the original data or train a new run")
    tid, eid = run_dir.name, evaluation_id(cfg, step)
    out_dir = run_dir / "evaluations" / eid
    t0 = time.perf_counter()
    evaluation = evaluate_gan(cfg, gan, bundle, device, out_dir)
    record = base_record(cfg, tid, eid, run_dir)
    record.update({k: evaluation[k] for k in EVALUATION_FIELDS if k in evaluation})
    record.update(status="completed", evaluated_from=str(ckpt_path), evaluated_step=step, evaluation_only=True,
                  data=bundle.meta, device=str(device))
    record["timings"] = {**evaluation["timings"], "total_s": time.perf_counter() - t0}
    write_record(ecfg.paths.store_dir, record)
    atomic_write_json(out_dir / "record.json", record)
    return record

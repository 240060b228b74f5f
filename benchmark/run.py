"""One benchmark run end to end: data -> GAN training -> sampling -> metrics -> downstream -> results store.

``execute_run`` never lets one bad run kill a multirun: a run that diverges is recorded with status ``diverged``,
one that raises is recorded with status ``failed`` (with the error), and only then, in single-run mode, re-raised.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from benchmark.store import append_record, flatten_config
from benchmark.utils import (atomic_write_json, git_commit, package_versions, resolve_device, stable_hash)

log = logging.getLogger(__name__)

# Keys that do not change what a run computes: excluded from the run id, so that e.g. turning the progress bar
# off, moving the results folder or the dataset (the record keeps the file-list hashes) still resumes the same run.
_VOLATILE = ("paths", "dataset.root", "train.progress", "train.log_every", "train.stop_after", "device", "evaluate",
             "num_threads")


def run_id(cfg: DictConfig) -> str:
    flat = flatten_config(cfg)
    kept = {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in _VOLATILE)}
    size = cfg.data.train_size if cfg.data.train_size is not None else "all"
    return f"{cfg.dataset.name}-{cfg.gan.name}-n{size}-s{cfg.seed}-{stable_hash(kept)}"


def _attach_file_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def execute_run(cfg: DictConfig, raise_on_failure: bool = True) -> dict:
    from benchmark.data import load_dataset
    from benchmark.evaluate import evaluate_gan
    from benchmark.train_loop import StopRequested, train

    rid = run_id(cfg)
    run_dir = Path(cfg.paths.runs_dir) / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    done_file = run_dir / "record.json"
    if done_file.exists():
        import json
        log.info("run %s is already complete (%s); nothing to do", rid, done_file)
        return json.loads(done_file.read_text())

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    handler = _attach_file_log(run_dir)
    record = {
        "run_id": rid, "run_dir": str(run_dir), "experiment": cfg.experiment_name, "seed": cfg.seed,
        "dataset": cfg.dataset.name, "gan": cfg.gan.name, "train_size": cfg.data.train_size,
        "config": flatten_config(cfg), "versions": package_versions(), "git_commit": git_commit(),
        "timings": {}, "metrics": [], "downstream": [],
    }
    t_start = time.perf_counter()
    if cfg.get("num_threads"):
        import torch

        torch.set_num_threads(cfg.num_threads)
    try:
        device = resolve_device(cfg.device)
        record["device"] = str(device)
        t0 = time.perf_counter()
        bundle = load_dataset(cfg.dataset, cfg.data)
        record["timings"]["data_s"] = time.perf_counter() - t0
        record["data"] = bundle.meta
        log.info("run %s: %d train / %d test images, device %s", rid, len(bundle.train), len(bundle.test), device)

        result = train(cfg, bundle, run_dir, device)
        record.update(status=result.status, steps_done=result.steps_done, resumed_from=result.resumed_from,
                      final_losses=result.last_losses)
        record["timings"]["train_s"] = result.seconds
        if result.status == "completed" and cfg.evaluate:
            evaluation = evaluate_gan(cfg, result.gan, bundle, device, run_dir)
            record["metrics"], record["downstream"] = evaluation["metrics"], evaluation["downstream"]
            record["timings"].update(evaluation["timings"])
    except StopRequested:
        logging.getLogger().removeHandler(handler)
        raise
    except Exception as err:  # recorded, then re-raised only outside a multirun
        log.error("run %s failed: %s", rid, err)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        record["timings"]["total_s"] = time.perf_counter() - t_start
        append_record(cfg.paths.store_dir, record)
        logging.getLogger().removeHandler(handler)
        if raise_on_failure:
            raise
        return record

    record["timings"]["total_s"] = time.perf_counter() - t_start
    append_record(cfg.paths.store_dir, record)
    atomic_write_json(done_file, record)
    logging.getLogger().removeHandler(handler)
    log.info("run %s: status %s, record stored in %s", rid, record["status"], cfg.paths.store_dir)
    return record

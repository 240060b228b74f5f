"""The results store: one JSON file per record, written atomically.

One record per (training id, evaluation id): the file is named by that pair, so evaluating the same training with the
same evaluation settings again *replaces* its record (a re-evaluation, a relaunch after a kill between two writes, a
failed run that later succeeds), while another evaluation of the same training gets a record of its own.

Why one file per record: concurrent runs of a multirun (joblib, SLURM array jobs on a shared file system) can write at
the same time without a lock, and a run killed mid-write leaves only a hidden temporary file that readers ignore — never
half a record. ``write_record`` is the only writer; reports only read (``load_records`` / ``metric_table``).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from benchmark.utils import atomic_write_json

SCHEMA_VERSION = 2
# Config keys that change neither a generator's weights nor any number computed from it: part of no run id and
# never a reason to keep two leaderboard rows apart (where things live, progress bars, snapshot cadence, device).
VOLATILE_KEYS = ("paths", "dataset.root", "device", "num_threads", "train.progress", "train.log_every",
                 "train.stop_after", "train.sample_every", "train.sample_grid", "train.checkpoint_every",
                 "train.keep_checkpoints", "downstream.progress")
STATUSES = ("completed", "diverged", "failed")


def flatten_config(cfg: DictConfig | dict, prefix: str = "") -> dict:
    """Resolved config as flat ``a.b.c`` keys (lists kept as JSON strings so records stay tabular)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            flat[path] = json.dumps(node, default=str)
        else:
            flat[path] = node

    walk(container, prefix)
    return flat


def record_id(training_id: str, evaluation_id: str) -> str:
    return f"{training_id}--{evaluation_id}"


def record_path(store_dir: str | Path, training_id: str, evaluation_id: str) -> Path:
    return Path(store_dir) / "records" / f"{record_id(training_id, evaluation_id)}.json"


def write_record(store_dir: str | Path, record: dict) -> Path:
    """Validate and store one record, replacing the record of the same (training id, evaluation id) if any.

    The write is one ``os.replace`` of a deterministic file name, so it is idempotent: a run killed after it and
    relaunched writes the same file again instead of adding a second record."""
    for key in ("run_id", "training_id", "evaluation_id", "status", "config"):
        if key not in record:
            raise ValueError(f"results record is missing {key!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {record['status']!r}")
    # completed in place, so that the caller holds exactly what was stored
    for key, default in (("schema_version", SCHEMA_VERSION), ("metrics", []), ("downstream", [])):
        record.setdefault(key, default)
    record["record_id"] = record_id(record["training_id"], record["evaluation_id"])
    record["recorded_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    path = record_path(store_dir, record["training_id"], record["evaluation_id"])
    atomic_write_json(path, record)
    return path


def read_record(store_dir: str | Path, training_id: str, evaluation_id: str) -> dict | None:
    """The stored record of (training id, evaluation id), or None."""
    path = record_path(store_dir, training_id, evaluation_id)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"results store file {path} is not valid JSON: {err}") from err


def load_records(store_dir: str | Path) -> list[dict]:
    """All complete records, oldest first, one per record id (the newest wins where an older store holds several).
    Unreadable files are reported, not skipped silently."""
    folder = Path(store_dir) / "records"
    by_id: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):  # hidden temporaries (.name.tmp) do not match
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"results store file {path} is not valid JSON: {err}") from err
        key = rec.get("record_id") or path.stem
        if key not in by_id or str(rec.get("recorded_at", "")) >= str(by_id[key].get("recorded_at", "")):
            by_id[key] = rec
    return sorted(by_id.values(), key=lambda r: str(r.get("recorded_at", "")))


def metric_table(records: list[dict]) -> pd.DataFrame:
    """One row per (run, metric record): run-level columns + the flattened config (``cfg.*``) + the metric's fields.

    Downstream records become rows too, their metric name suffixed with what they were trained on
    (``dice_unet@real``, ``dice_unet@synthetic``, ...).
    """
    rows = []
    for rec in records:
        base = {"run_id": rec["run_id"], "record_id": rec.get("record_id"), "training_id": rec.get("training_id"),
                "evaluation_id": rec.get("evaluation_id"), "collapsed": rec.get("collapsed"),
                "experiment": rec.get("experiment"), "status": rec["status"], "seed": rec.get("seed"),
                "dataset": rec.get("dataset"), "train_size": rec.get("train_size"), "gan": rec.get("gan"),
                "recorded_at": rec.get("recorded_at")}
        base.update({f"cfg.{k}": v for k, v in rec["config"].items()})
        for m in rec.get("metrics", []):  # a metric's own seed (KID subsets, bootstrap) must not hide the run's
            m = {("metric_seed" if k == "seed" else k): v for k, v in m.items()}
            rows.append({**base, **m})
        for d in rec.get("downstream", []):
            if d.get("skipped"):
                continue
            rows.append({**base, **d, "metric": f"{d['metric']}@{d.get('train_on', 'real')}"})
        if not rec.get("metrics") and not rec.get("downstream"):
            rows.append({**base, "metric": None, "value": None})
    return pd.DataFrame(rows)

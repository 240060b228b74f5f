"""The results store: one JSON file per record, written atomically.

Why one file per record: concurrent runs of a multirun (joblib, SLURM array jobs on a shared file system) can write at
the same time without a lock, and a run killed mid-write leaves only a hidden temporary file that readers ignore — never
half a record. ``append_record`` is the only writer; reports only read (``load_records`` / ``metric_table``).
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from benchmark.utils import atomic_write_json

SCHEMA_VERSION = 1
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


def append_record(store_dir: str | Path, record: dict) -> Path:
    """Validate and store one run record; returns the file written."""
    for key in ("run_id", "status", "config"):
        if key not in record:
            raise ValueError(f"results record is missing {key!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {record['status']!r}")
    record = {"schema_version": SCHEMA_VERSION, "metrics": [], "downstream": [], **record}
    record.setdefault("recorded_at", _dt.datetime.now(_dt.timezone.utc).isoformat())
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = Path(store_dir) / "records" / f"{stamp}-{record['run_id']}-{uuid.uuid4().hex[:8]}.json"
    atomic_write_json(path, record)
    return path


def load_records(store_dir: str | Path) -> list[dict]:
    """All complete records, oldest first. Unreadable files are reported, not skipped silently."""
    folder = Path(store_dir) / "records"
    records = []
    for path in sorted(folder.glob("*.json")):  # hidden temporaries (.name.tmp) do not match
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"results store file {path} is not valid JSON: {err}") from err
    return records


def metric_table(records: list[dict]) -> pd.DataFrame:
    """One row per (run, metric record): run-level columns + the flattened config (``cfg.*``) + the metric's fields.

    Downstream records become rows too, their metric name suffixed with what they were trained on
    (``dice_unet@real``, ``dice_unet@synthetic``, ...).
    """
    rows = []
    for rec in records:
        base = {"run_id": rec["run_id"], "status": rec["status"], "seed": rec.get("seed"),
                "dataset": rec.get("dataset"), "train_size": rec.get("train_size"), "gan": rec.get("gan"),
                "recorded_at": rec.get("recorded_at")}
        base.update({f"cfg.{k}": v for k, v in rec["config"].items()})
        for m in rec.get("metrics", []):
            rows.append({**base, **m})
        for d in rec.get("downstream", []):
            if d.get("skipped"):
                continue
            rows.append({**base, **d, "metric": f"{d['metric']}@{d.get('train_on', 'real')}"})
        if not rec.get("metrics") and not rec.get("downstream"):
            rows.append({**base, "metric": None, "value": None})
    return pd.DataFrame(rows)

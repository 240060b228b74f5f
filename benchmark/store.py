"""The results store: one JSON file per record, written atomically.

One record per (training id, evaluation id): the file is named by that pair, so evaluating the same training with the
same evaluation settings again *replaces* its record (a re-evaluation, a relaunch after a kill between two writes, a
failed run that later succeeds), while another evaluation of the same training gets a record of its own.

Why one file per record: concurrent runs of a multirun (joblib, SLURM array jobs on a shared file system) can write at
the same time without a lock, and a run killed mid-write leaves only a hidden temporary file that readers ignore — never
half a record. ``write_record`` is the only writer; reports only read (``load_records``, ``metric_table``: one row
per record and metric; ``benchmark.store_index`` keeps a columnar index of the same rows for large stores).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from medsynbench.benchmark.utils import atomic_write_json

SCHEMA_VERSION = 2
# Config keys that change neither a generator's weights nor any number computed from it: part of no run id and
# never a reason to keep two leaderboard rows apart (where things live, progress bars, snapshot cadence, device).
VOLATILE_KEYS = ("paths", "dataset.root", "device", "num_threads", "progress", "train.progress", "train.log_every",
                 "train.stop_after", "train.sample_every", "train.sample_grid", "train.checkpoint_every",
                 "train.keep_checkpoints", "downstream.progress",
                 "objective",  # what a sweeper optimises (benchmark/objective.py): read from the record, never in an id
                 "retry_failed")  # whether a relaunch retries runs recorded as failed (benchmark/run.py)
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


def dedupe_records(records: list[dict]) -> list[dict]:
    """One record per ``record_id`` (the newest ``recorded_at`` wins); records without one are all kept."""
    newest: dict[str, dict] = {}
    rest = []
    for rec in records:
        rid = rec.get("record_id")
        if rid is None:
            rest.append(rec)
        elif rid not in newest or str(rec.get("recorded_at") or "") >= str(newest[rid].get("recorded_at") or ""):
            newest[rid] = rec
    return rest + list(newest.values())


def load_records(store_dir: str | Path) -> list[dict]:
    """All complete records, oldest first, one per record id (the newest wins where an older store holds several).
    Unreadable files are reported, not skipped silently."""
    folder = Path(store_dir) / "records"
    records = []
    for path in sorted(folder.glob("*.json")):  # hidden temporaries (.name.tmp) do not match
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"results store file {path} is not valid JSON: {err}") from err
        rec.setdefault("record_id", path.stem)
        records.append(rec)
    return sorted(dedupe_records(records), key=lambda r: str(r.get("recorded_at", "")))


# Run-level fields copied onto every row of metric_table (config keys are prefixed ``cfg.``).
RUN_COLUMNS = ("run_id", "status", "seed", "dataset", "gan", "train_size", "experiment", "training_id",
               "evaluation_id", "record_id", "recorded_at", "collapsed", "collapse_reasons")


def run_fields(rec: dict) -> tuple[dict, dict]:
    """(run-level columns, ``cfg.*`` columns) of one record, as every reader of the store tabulates them."""
    config = rec.get("config") or {}
    base = {c: rec.get(c) for c in RUN_COLUMNS}
    if base["seed"] is None:
        base["seed"] = config.get("seed")
    if isinstance(base["collapse_reasons"], list):
        base["collapse_reasons"] = "; ".join(base["collapse_reasons"])
    cfg = {f"cfg.{k}": v for k, v in config.items()}
    if "evaluate_step" in config and config["evaluate_step"] is None:  # null = the last step: compare as such
        cfg["cfg.evaluate_step"] = rec.get("evaluated_step", config.get("train.steps"))
    return base, cfg


def metric_entries(rec: dict) -> list[dict]:
    """A record's metric records and downstream scores (named ``<metric>@<trained on>``; skipped ones left out), each
    a copy whose own ``seed`` (KID subsets, bootstrap) is renamed ``metric_seed`` so that it never hides the run's."""
    entries = [dict(m) for m in rec.get("metrics", [])]
    entries += [{**d, "metric": f"{d['metric']}@{d.get('train_on', 'real')}"}
                for d in rec.get("downstream", []) if not d.get("skipped")]
    for m in entries:
        if "seed" in m:
            m["metric_seed"] = m.pop("seed")
    return entries


def metric_table(records: list[dict]) -> pd.DataFrame:
    """One row per (record, metric): run-level columns, ``cfg.*`` config keys, then the metric record's fields.

    Run-level fields win over metric fields of the same name (a metric record's ``seed`` is its subset seed, not
    the run's; it is kept as ``metric_seed``). Downstream scores are named ``<metric>@<trained on>``.
    ``evaluate_step: null`` (evaluate the last step) is replaced by the step evaluated, so that a run evaluated at
    the end of training and a re-evaluation of its last checkpoint (``evaluate_step`` set) compare equal.
    """
    rows = []
    for rec in dedupe_records(records):
        base, cfg = run_fields(rec)
        base.update(cfg)
        entries = metric_entries(rec)
        for m in entries:
            rows.append({**{k: v for k, v in m.items() if k not in base}, **base})
        if not entries:
            rows.append({**base, "metric": None, "value": None})
    return pd.DataFrame(rows)

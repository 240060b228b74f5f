"""Sweep status: which runs of a sweep are done, running, failed, diverged, interrupted or still pending.

``medsynbench status sweep_dir=<hydra multirun dir>`` re-plans the sweep from its ``multirun.yaml`` (the overrides
and sweeper parameters it was launched with, expanded by Hydra's own override parser and BasicSweeper), composes each
job's config from the same config directory, computes its training id (the data of each distinct ``dataset`` + ``data``
config is loaded once, for its content hash) and evaluation id, and classifies the job:

- **done** / **diverged** / **failed**: the results store holds a record of (training id, evaluation id) with that
  status (a job whose data cannot be loaded is looked up under its config-only id, as ``execute_run`` records it);
- **running**: the run's lock is held (probed with a non-blocking acquire: reliable on a local file system) or its
  ``heartbeat.json`` is fresh (younger than ``heartbeat_timeout_s``; written every ``MEDSYNBENCH_HEARTBEAT_S`` seconds,
  default 30, by the process that holds the lock, so it also works from another node of a shared file system). A
  heartbeat left by a killed process on *this* host is recognised by its dead pid;
- **interrupted**: the run directory holds checkpoints (or a finished training) but no record and nothing is running:
  a relaunch resumes it;
- **pending**: nothing yet.

``medsynbench status experiment_name=<name>`` reports the records of an experiment (done / failed / diverged) and the
runs working on it (from their heartbeats); without a sweep definition the pending runs are unknown, and it says so.

This module also holds :class:`Heartbeat`, which :mod:`benchmark.run` starts around a run's locked work.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
RUN_LOCK = "run"                 # execute_run holds file_lock(run_dir / RUN_LOCK) while it works on a run
LOCK_FILE = f"{RUN_LOCK}.lock"   # the file medsynbench.io.file_lock creates for it
HEARTBEAT_ENV = "MEDSYNBENCH_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 30.0
STATES = ("done", "running", "failed", "diverged", "interrupted", "pending", "invalid")
_STEP_MESSAGE = "step %d/%d %s"  # benchmark.train_loop's progress log line
MAX_PENDING_LINES = 20             # the table lists at most this many pending runs


def heartbeat_interval() -> float:
    """Seconds between two heartbeats (``MEDSYNBENCH_HEARTBEAT_S``, default 30)."""
    try:
        return max(0.05, float(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)))
    except ValueError:
        return DEFAULT_HEARTBEAT_S


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _StepTap(logging.Handler):
    """Catches the training loop's ``step i/n`` log lines so the heartbeat can say how far the run is."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.step: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _STEP_MESSAGE and record.args:
            with contextlib.suppress(Exception):
                self.step = int(record.args[0])


class Heartbeat:
    """While a process works on a run (it holds ``run.lock``), write ``<run dir>/heartbeat.json`` (host, pid, step,
    phase, time) now and every :func:`heartbeat_interval` seconds from a daemon thread; removed on exit. A killed
    process leaves it behind, ageing: ``status`` counts a run as running only while its heartbeat is fresh."""

    def __init__(self, run_dir: str | os.PathLike, training_id: str, evaluation_id: str,
                 interval: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / HEARTBEAT_FILE
        self.interval = heartbeat_interval() if interval is None else interval
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "training_id": training_id,
                     "evaluation_id": evaluation_id, "started_at": _now_iso()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tap = _StepTap()
        self._logger = logging.getLogger("medsynbench.benchmark.train_loop")

    def beat(self) -> None:
        from medsynbench.checkpoints import checkpoint_paths, checkpoint_step
        from medsynbench.io import atomic_write_json

        step = self._tap.step
        if step is None:  # progress not logged (log level above INFO): the last checkpoint says it
            paths = checkpoint_paths(self.run_dir)
            step = checkpoint_step(paths[-1]) if paths else None
        phase = "evaluating" if (self.run_dir / "training.json").is_file() else "training"
        atomic_write_json(self.path, {**self.info, "step": step, "phase": phase, "time": time.time(),
                                      "time_iso": _now_iso(), "interval_s": self.interval})

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as err:  # a heartbeat must never stop a run (a full disk, a flaky mount)
                log.debug("heartbeat of %s not written: %s", self.run_dir, err)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        self._logger.addHandler(self._tap)
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.run_dir.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._logger.removeHandler(self._tap)
        with contextlib.suppress(OSError):
            self.path.unlink()


# --- reading the state of one run --------------------------------------------------------------------------------

def read_heartbeat(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / HEARTBEAT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lock_held(run_dir: str | os.PathLike) -> bool:
    """Whether another process holds the run's lock (a non-blocking acquire fails). Reliable on a local file system;
    on a network file system a lock held on another node may go unseen, which is what the heartbeat is for."""
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # read-only or vanished: no verdict from the lock
        return False
    lock.release()
    return False


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def activity(run_dir: str | os.PathLike, timeout_s: float) -> dict | None:
    """``{host, pid, step, phase, heartbeat_age_s, via}`` when a process works on the run now, else None."""
    run_dir = Path(run_dir)
    beat = read_heartbeat(run_dir)
    age = None
    fresh = False
    if beat is not None:
        age = max(0.0, time.time() - float(beat.get("time", 0)))
        fresh = age < timeout_s
        if fresh and beat.get("host") == socket.gethostname() and not _pid_alive(beat.get("pid")):
            fresh = False  # left behind by a process of this host that was killed
    held = lock_held(run_dir)
    if not (held or fresh):
        return None
    info = {"via": "lock" if held and not fresh else "heartbeat" if not held else "lock+heartbeat",
            "heartbeat_age_s": None if age is None else round(age, 1)}
    if beat is not None and (fresh or held):
        info.update({k: beat.get(k) for k in ("host", "pid", "step", "phase")})
    return info


def classify_run(store_dir: str | os.PathLike, runs_dir: str | os.PathLike, training_id: str, evaluation_id: str,
                 timeout_s: float = 120.0) -> dict:
    """The state of one (training id, evaluation id): see the module docstring."""
    from medsynbench.benchmark.store import read_record

    run_dir = Path(runs_dir) / training_id
    out = {"training_id": training_id, "evaluation_id": evaluation_id, "run_dir": str(run_dir)}
    try:
        record = read_record(store_dir, training_id, evaluation_id)
    except ValueError as err:  # an unreadable record: say so, and treat the run as not recorded
        out["warning"] = str(err)
        record = None
    own = run_dir / "evaluations" / evaluation_id / "record.json"
    if record is None and own.is_file():  # killed between the run's own copy and the store write
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(own.read_text())
    status = (record or {}).get("status")
    if status in ("completed", "diverged"):
        out.update(state="done" if status == "completed" else "diverged", recorded_at=record.get("recorded_at"))
        return out
    from medsynbench.checkpoints import checkpoint_paths, checkpoint_step

    running = activity(run_dir, timeout_s) if run_dir.is_dir() else None
    checkpoints = checkpoint_paths(run_dir) if run_dir.is_dir() else []
    if running is not None:  # also a failed run retried right now
        if running.get("step") is None and checkpoints:  # no step in the heartbeat yet: the last checkpoint's
            running["step"] = checkpoint_step(checkpoints[-1])
        out.update(state="running", **running)
        return out
    if status == "failed":
        out.update(state="failed", error=record.get("error"), recorded_at=record.get("recorded_at"))
        return out
    if (run_dir / "training.json").is_file():
        out.update(state="interrupted", detail="training complete; evaluation not recorded")
    elif checkpoints:
        out.update(state="interrupted", detail=f"last checkpoint step {checkpoint_step(checkpoints[-1])}",
                   step=checkpoint_step(checkpoints[-1]))
    else:
        out.update(state="pending")
    return out


# --- planning a sweep ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _chdir(path: str | os.PathLike | None):
    if not path or not Path(path).is_dir():
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def find_latest_sweep(results_dir: str | os.PathLike) -> Path:
    found = sorted(Path(results_dir).glob("hydra/multirun/*/*/multirun.yaml"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no sweep under {Path(results_dir) / 'hydra' / 'multirun'} (no multirun.yaml)")
    return found[-1].parent


def _started_jobs(sweep_dir: Path) -> dict[int, list[str]]:
    """{job number: overrides} of the jobs that started (Hydra writes <job dir>/.hydra/overrides.yaml first)."""
    from omegaconf import OmegaConf

    jobs = {}
    for path in sweep_dir.glob("*/.hydra/overrides.yaml"):
        num = None
        hydra_yaml = path.parent / "hydra.yaml"
        with contextlib.suppress(Exception):
            num = int(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num"))
        if num is None and path.parent.parent.name.isdigit():
            num = int(path.parent.parent.name)
        if num is not None:
            with contextlib.suppress(Exception):
                jobs[num] = [str(o) for o in OmegaConf.load(path)]
    return jobs


def plan_sweep(sweep_dir: str | os.PathLike) -> dict:
    """The jobs of a Hydra multirun directory: ``{sweeper, planned, jobs: [{num, overrides, started}], ...}``.

    For Hydra's BasicSweeper (grids: ``seed=0,1 data.train_size=50,100``, ``+sweep=<name>``) the full list is expanded
    from ``multirun.yaml`` exactly as the sweeper does; for other sweepers (Optuna ...) the jobs are those that started,
    and ``planned`` is their trial count when the sweeper config gives one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a Hydra multirun directory (no multirun.yaml; pass the folder that "
                                "`medsynbench train --multirun` printed, or sweep_dir=latest)")
    master = OmegaConf.load(path)
    target = str(OmegaConf.select(master, "hydra.sweeper._target_", default="") or "")
    task = [str(o) for o in (OmegaConf.select(master, "hydra.overrides.task", default=None) or [])]
    started = _started_jobs(sweep_dir)
    plan = {"sweep_dir": str(sweep_dir), "sweeper": target.rsplit(".", 1)[-1] or "unknown", "task_overrides": task,
            "config_name": OmegaConf.select(master, "hydra.job.config_name", default="config") or "config",
            "cwd": OmegaConf.select(master, "hydra.runtime.cwd", default=None)}
    sources = OmegaConf.select(master, "hydra.runtime.config_sources", default=None) or []
    plan["config_dir"] = next((s.path for s in sources if s.get("provider") == "main" and s.get("schema") == "file"),
                              None)
    search = [f"{s.schema}://{s.path}" for s in sources if s.get("provider") == "command-line" and s.get("path")]
    search += [str(p) for p in (OmegaConf.select(master, "hydra.searchpath", default=None) or [])]
    plan["searchpath"] = list(dict.fromkeys(search))
    if target.endswith("BasicSweeper"):
        params = OmegaConf.select(master, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params) if params is not None else {}
        arguments = [f"{k}={v}" for k, v in params.items()] + task  # what BasicSweeper.sweep expands
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
        jobs = [list(job) for batch in batches for job in batch]
        plan["planned"] = len(jobs)
    else:
        jobs = [started[n] for n in sorted(started)]
        trials = OmegaConf.select(master, "hydra.sweeper.n_trials", default=None)
        plan["planned"] = int(trials) if trials is not None else None
    plan["jobs"] = [{"num": i, "overrides": job, "started": i in started} for i, job in enumerate(jobs)]
    # the overrides that tell jobs apart (shown per job)
    values: dict[str, set] = {}
    for job in jobs:
        for o in job:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    varying = [k for k, v in values.items() if len(v) > 1]
    for entry in plan["jobs"]:
        entry["label"] = " ".join(o for o in entry["overrides"] if o.partition("=")[0] in varying) or "(one job)"
    return plan


def _job_ids(cfg, data_cache: dict) -> dict:
    """training id / evaluation id of one composed job config, as ``execute_run`` would compute them."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.run import config_only_id, data_content, evaluation_id, training_id
    from medsynbench.benchmark.utils import stable_hash

    eid = evaluation_id(cfg)
    key = stable_hash({"dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                       "data": OmegaConf.to_container(cfg.data, resolve=True)})
    if key not in data_cache:
        from medsynbench.benchmark.data import load_dataset

        try:
            meta = load_dataset(cfg.dataset, cfg.data).meta
            data_cache[key] = (data_content(meta), None)
        except Exception as err:  # the run fails (or failed) at load: execute_run records it under the config id
            data_cache[key] = (None, f"{type(err).__name__}: {err}")
    meta, error = data_cache[key]
    if meta is None:
        return {"training_id": config_only_id(cfg), "evaluation_id": eid, "data_error": error}
    return {"training_id": training_id(cfg, meta), "evaluation_id": eid}


def sweep_status(sweep_dir: str | os.PathLike, timeout_s: float = 120.0) -> dict:
    """Plan a sweep (:func:`plan_sweep`) and classify each job (:func:`classify_run`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from medsynbench.benchmark.config import register_configs

    register_configs()
    plan = plan_sweep(sweep_dir)
    config_dir = plan["config_dir"]  # the launching checkout's conf/ (this one's where that path is not here)
    if not config_dir or not Path(config_dir).is_dir():
        config_dir = str(Path(__file__).resolve().parents[1] / "conf")
    extra = [f"hydra.searchpath=[{','.join(plan['searchpath'])}]"] if plan["searchpath"] else []
    runs, data_cache = [], {}
    GlobalHydra.instance().clear()
    try:
        with _chdir(plan["cwd"]), initialize_config_dir(version_base="1.3", config_dir=config_dir):
            for job in plan["jobs"]:
                entry = {"num": job["num"], "label": job["label"], "overrides": job["overrides"],
                         "started": job["started"]}
                try:
                    cfg = compose(config_name=plan["config_name"], overrides=[*job["overrides"], *extra])
                    ids = _job_ids(cfg, data_cache)
                except Exception as err:  # the job does not compose: the sweep stops at it, before any record
                    entry.update(state="invalid", error=f"{type(err).__name__}: {err}".strip()[:500])
                    runs.append(entry)
                    continue
                state = classify_run(cfg.paths.store_dir, cfg.paths.runs_dir, ids["training_id"],
                                     ids["evaluation_id"], timeout_s)
                if ids.get("data_error") and state["state"] == "pending":
                    state["detail"] = f"data does not load now: {ids['data_error']}"
                entry.update(state)
                runs.append(entry)
    finally:
        GlobalHydra.instance().clear()
    counts = {s: sum(r["state"] == s for r in runs) for s in STATES}
    if plan["planned"] is not None and plan["planned"] > len(runs):  # trials of a non-grid sweeper not started yet
        counts["pending"] += plan["planned"] - len(runs)
    return {"kind": "sweep", "sweep_dir": plan["sweep_dir"], "sweeper": plan["sweeper"], "planned": plan["planned"],
            "counts": counts, "runs": runs,
            "note": None if plan["planned"] is not None else
            f"{plan['sweeper']}: the number of planned trials is unknown; listed are the jobs that started"}


def experiment_status(store_dir: str | os.PathLike, runs_dir: str | os.PathLike, name: str,
                      timeout_s: float = 120.0) -> dict:
    """Records of one experiment (done / failed / diverged) and the runs working on it now (their heartbeats)."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.store import load_records

    folder = Path(store_dir) / "records"
    records = [r for r in (load_records(store_dir) if folder.is_dir() else []) if r.get("experiment") == name]
    state_of = {"completed": "done", "diverged": "diverged", "failed": "failed"}
    runs = [{"training_id": r.get("training_id"), "evaluation_id": r.get("evaluation_id"),
             "state": state_of.get(r.get("status"), str(r.get("status"))), "error": r.get("error"),
             "recorded_at": r.get("recorded_at"), "label": f"seed={r.get('seed')} n={r.get('train_size')}"}
            for r in records]
    recorded = {(r["training_id"], r["evaluation_id"]) for r in runs if r["state"] in ("done", "diverged")}
    for run_dir in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()) if Path(runs_dir).is_dir() else []:
        if not ((run_dir / HEARTBEAT_FILE).is_file() or (run_dir / LOCK_FILE).is_file()):
            continue
        try:
            experiment = OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "experiment_name")
        except Exception:
            continue
        running = activity(run_dir, timeout_s) if experiment == name else None
        beat = read_heartbeat(run_dir) or {}
        if running is None or (run_dir.name, beat.get("evaluation_id")) in recorded:
            continue
        runs = [r for r in runs if r["training_id"] != run_dir.name or r["state"] != "failed"]  # retried right now
        runs.append({"training_id": run_dir.name, "evaluation_id": beat.get("evaluation_id"), "state": "running",
                     "label": "", **running})
    counts = {s: sum(r["state"] == s for r in runs) for s in STATES}
    counts["pending"] = None
    return {"kind": "experiment", "experiment_name": name, "store_dir": str(store_dir), "planned": None,
            "counts": counts, "runs": runs,
            "note": "pending runs are unknown without a sweep definition: pass sweep_dir=<multirun dir> for them"}


# --- output ----------------------------------------------------------------------------------------------------------

def _age(seconds) -> str:
    if seconds is None:
        return "no heartbeat"
    return f"heartbeat {seconds:.0f} s ago"


def format_report(report: dict) -> str:
    counts = report["counts"]
    if report["kind"] == "sweep":
        planned = report["planned"] if report["planned"] is not None else "?"
        head = f"sweep {report['sweep_dir']} ({report['sweeper']}): {planned} planned runs"
    else:
        head = f"experiment {report['experiment_name']!r} in {report['store_dir']}"
    shown = [s for s in STATES if counts.get(s) or s in ("done", "running", "failed", "pending")]
    lines = [head, "  " + " · ".join(f"{s} {'?' if counts.get(s) is None else counts[s]}" for s in shown)]
    if report.get("note"):
        lines.append(f"  note: {report['note']}")

    def who(run):
        num = f"#{run['num']} " if "num" in run else ""
        return f"{num}{run.get('label') or ''}  {run['training_id']}".rstrip()

    groups = [
        ("running", lambda r: f"step {r.get('step') if r.get('step') is not None else '?'}"
                              f"{' (' + r['phase'] + ')' if r.get('phase') else ''} on {r.get('host') or '?'}:"
                              f"{r.get('pid') or '?'}, {_age(r.get('heartbeat_age_s'))} [{r.get('via')}]"),
        ("failed", lambda r: f"error: {r.get('error')}"),
        ("diverged", lambda r: f"recorded {r.get('recorded_at')}"),
        ("invalid", lambda r: f"error: {r.get('error')}"),
        ("interrupted", lambda r: f"{r.get('detail', '')} (a relaunch resumes it)"),
        ("pending", lambda r: r.get("detail", "")),
    ]
    for state, describe in groups:
        rows = [r for r in report["runs"] if r["state"] == state]
        if not rows:
            continue
        lines.append(f"{state}:")
        shown_rows = rows if state != "pending" or len(rows) <= MAX_PENDING_LINES else rows[:MAX_PENDING_LINES]
        lines += [f"  {who(r)}  {describe(r)}".rstrip() for r in shown_rows]
        if len(shown_rows) < len(rows):
            lines.append(f"  ... and {len(rows) - len(shown_rows)} more (format=json lists them all)")
    if counts.get("failed"):
        lines.append("failed runs are skipped by a relaunch; relaunch with retry_failed=true to retry them")
    return "\n".join(lines)


def status_report(cfg) -> dict:
    """The report of ``medsynbench status`` for its config (sweep_dir or experiment_name)."""
    timeout = float(cfg.heartbeat_timeout_s)
    if cfg.sweep_dir:
        sweep_dir = find_latest_sweep(cfg.paths.results_dir) if cfg.sweep_dir == "latest" else Path(cfg.sweep_dir)
        return sweep_status(sweep_dir, timeout)
    if cfg.experiment_name:
        return experiment_status(cfg.paths.store_dir, cfg.paths.runs_dir, cfg.experiment_name, timeout)
    raise ValueError("status needs sweep_dir=<hydra multirun dir> (or sweep_dir=latest) or experiment_name=<name>")


__all__ = ["Heartbeat", "activity", "classify_run", "experiment_status", "format_report", "lock_held",
           "plan_sweep", "read_heartbeat", "status_report", "sweep_status", "heartbeat_interval", "STATES"]

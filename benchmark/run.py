"""One benchmark run end to end: data -> GAN training -> sampling -> metrics -> downstream -> results store.

Two ids make a run trustworthy at sweep scale:

- the **training id** covers everything that determines the generator's weights: the decoded content of the training
  subset and the test split, preprocessing, training-set size, GAN, training settings, precision and seed. It names
  the run directory and its checkpoints. The data's location does not enter it (a moved copy of the same data still
  resumes), its content does (another folder's data, a fixed mask or a changed label trains anew);
- the **evaluation id** covers what is computed from the trained generator: metrics, downstream task, sample count,
  the checkpoint step evaluated and the experiment name.

The results store holds one record per (training id, evaluation id). Launching a config again therefore resumes an
interrupted training, evaluates only when the training is complete and the evaluation settings are new, and does
nothing when both are done. ``execute_run`` never lets one bad run kill a multirun: a run that diverges is recorded
with status ``diverged``, one that raises with status ``failed`` (and, in single-run mode, re-raised). A relaunch skips
a run recorded as ``failed`` (saying why it failed) unless ``retry_failed=true``. While a process works on a run it
holds ``<run dir>/run.lock`` and refreshes ``<run dir>/heartbeat.json`` (see :mod:`benchmark.status`).
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medsynbench.benchmark.status import HEARTBEAT_FILE, RUN_LOCK, Heartbeat
from medsynbench.benchmark.store import VOLATILE_KEYS, flatten_config, read_record, record_id, record_path, write_record
from medsynbench.benchmark.utils import atomic_write_json, git_commit, package_versions, resolve_device, stable_hash
from medsynbench.checkpoints import checkpoint_path, checkpoint_paths
from medsynbench.io import crash_point, file_lock, remove_stale_temporaries

log = logging.getLogger(__name__)

# Keys of the evaluation id; every other key (and the data's content) is part of the training id, except the
# VOLATILE_KEYS, which are in neither (moving the results folder or the dataset, the progress bar, the snapshot
# cadence, the device choice and the thread count never start a run anew).
EVALUATION_KEYS = ("metrics", "downstream", "n_samples", "evaluate_step", "experiment_name", "evaluate")
NO_EVALUATION = "none"  # evaluation id of a run launched with evaluate=false
DATA_CONTENT_KEYS = ("train_content_sha256", "test_content_sha256")  # of the data meta, part of the training id


def _matches(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def data_content(data_meta: dict) -> dict:
    """The data's content hashes from a loaded dataset's meta (what a training id and training.json keep)."""
    return {k: data_meta.get(k) for k in DATA_CONTENT_KEYS}


def _training_keys(cfg: DictConfig) -> tuple[str, dict]:
    """(readable prefix: dataset, GAN, size, seed; the flattened keys that determine the weights)."""
    size = cfg.data.train_size if cfg.data.train_size is not None else "all"
    kept = {k: v for k, v in flatten_config(cfg).items() if not _matches(k, VOLATILE_KEYS + EVALUATION_KEYS)}
    # federated=none adds nothing (ids of central runs are unchanged); a federated run's id covers its settings
    from medsynbench.benchmark.federated.config import RUNTIME_KEYS, enabled

    fed = enabled(cfg)
    kept = {k: v for k, v in kept.items() if not _matches(k, ("federated",) if not fed else
                                                           tuple(f"federated.{r}" for r in RUNTIME_KEYS))}
    suffix = f"-fed{cfg.federated.mode.replace('_', '')}" if fed else ""
    return f"{cfg.dataset.name}-{cfg.gan.name}-n{size}-s{cfg.seed}{suffix}", kept


def training_id(cfg: DictConfig, data_meta: dict) -> str:
    """Readable prefix (dataset, GAN, size, seed) + hash of what determines the weights, data content included."""
    prefix, kept = _training_keys(cfg)
    kept["data_content"] = data_content(data_meta)
    if not all(kept["data_content"].values()):
        raise ValueError(f"training_id needs the data's content hashes ({', '.join(DATA_CONTENT_KEYS)})")
    return f"{prefix}-{stable_hash(kept)}"


def evaluation_id(cfg: DictConfig, step: int | None = None) -> str:
    """Hash of the evaluation settings and the checkpoint step evaluated (default: the last training step).

    ``downstream: auto`` counts as the option it stands for (the same id as choosing that option). Where a sample
    count follows a rule (``n_samples: null``; the downstream tasks' synthetic sets) the rule is part of the id."""
    from medsynbench.benchmark.defaults import DOWNSTREAM_SIZING_RULE, N_SAMPLES_RULE, resolve_run_config

    if not cfg.get("evaluate", True):
        return NO_EVALUATION
    cfg = resolve_run_config(cfg)
    flat = flatten_config(cfg)
    kept = {k: v for k, v in flat.items() if _matches(k, EVALUATION_KEYS) and not _matches(k, ("evaluate_step",))}
    if cfg.get("n_samples") is None:
        kept["n_samples_rule"] = N_SAMPLES_RULE
    if (cfg.get("downstream") or {}).get("task", "none") != "none":
        kept["downstream_sizing_rule"] = DOWNSTREAM_SIZING_RULE
    kept["checkpoint_step"] = int(step if step is not None else evaluated_step(cfg))
    return f"e{stable_hash(kept)}"


def evaluated_step(cfg: DictConfig) -> int:
    step = cfg.get("evaluate_step")
    return int(cfg.train.steps if step is None else step)


def config_only_id(cfg: DictConfig) -> str:
    """Id of a run whose data could not be loaded (so its content hash is unknown): only its failure is recorded."""
    prefix, kept = _training_keys(cfg)
    return f"{prefix}-nodata{stable_hash(kept)}"


def _attach_file_log(run_dir: Path) -> tuple[logging.Handler, int]:
    """``train.log``: every record of the root logger, and this package's progress (INFO) even where the root logger
    is quieter (outside Hydra). Returns the handler and the package logger's level before, for :func:`_detach`."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    package = logging.getLogger("medsynbench")
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    return handler, level


def _detach_file_log(attached: tuple[logging.Handler, int]) -> None:
    handler, level = attached
    logging.getLogger().removeHandler(handler)
    handler.close()
    logging.getLogger("medsynbench").setLevel(level)


def base_record(cfg: DictConfig, tid: str, eid: str, run_dir: Path | None) -> dict:
    """The fields every record of a run has, before training and evaluation add theirs."""
    return {
        "run_id": tid, "training_id": tid, "evaluation_id": eid, "run_dir": str(run_dir) if run_dir else None,
        "experiment": cfg.experiment_name, "seed": cfg.seed, "dataset": cfg.dataset.name, "gan": cfg.gan.name,
        "train_size": cfg.data.train_size, "config": flatten_config(cfg), "versions": package_versions(),
        "git_commit": git_commit(), "timings": {}, "metrics": [], "downstream": [],
    }


def _finish(cfg: DictConfig, record: dict, eval_dir: Path | None) -> dict:
    """Store the record (idempotent: its file is named by the two ids), then its copy in the evaluation folder."""
    path = write_record(cfg.paths.store_dir, record)
    crash_point("after_store_record")
    if eval_dir is not None:
        atomic_write_json(eval_dir / "record.json", record)
    log.info("run %s: status %s, record %s", record["training_id"], record["status"], path)
    return record


def job_threads(cfg: DictConfig) -> int | None:
    """Torch threads of this run: ``num_threads`` when set, else the CPUs the job was given (SLURM's
    ``SLURM_CPUS_PER_TASK``, a submitit launcher's ``cpus_per_task``), else torch's current count capped at the CPUs
    this process may run on (its affinity): parallel runs never oversubscribe the cores. None = leave it."""
    import os

    import torch

    if cfg.get("num_threads"):
        return int(cfg.num_threads)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    try:
        from hydra.core.hydra_config import HydraConfig

        cpus = HydraConfig.get().launcher.get("cpus_per_task")
        if cpus:
            return int(cpus)
    except (ValueError, AttributeError):  # not under Hydra (a direct call), or a launcher without that key
        pass
    if hasattr(os, "sched_getaffinity"):
        return min(torch.get_num_threads(), len(os.sched_getaffinity(0)))
    return None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) ended a run; ``str()`` is the one-line message for the user (what was saved, how to resume)."""


def execute_run(cfg: DictConfig, raise_on_failure: bool = True) -> dict:
    """Train, evaluate and record one run (see the module's docstring). Ctrl-C raises :class:`RunInterrupted`
    (after training saved a resumable checkpoint); nothing is recorded then, as after a kill."""
    from medsynbench.benchmark.defaults import resolve_run_config

    from medsynbench.benchmark.validate import validate_run_config

    validate_run_config(cfg)  # a misspelt key in any group stops here, before data, training or any record
    cfg = resolve_run_config(cfg)  # downstream=auto -> the option that fits dataset.task (what is recorded)
    try:
        return _execute(cfg, raise_on_failure)
    except RunInterrupted:
        raise
    except KeyboardInterrupt as err:
        from medsynbench.benchmark.train_loop import TrainingInterrupted

        if isinstance(err, TrainingInterrupted):  # "interrupted at step N; checkpoint saved to ...; relaunch ..."
            raise RunInterrupted(str(err)) from None
        # outside the training loop (loading, set-up, evaluation): nothing is half-written, nothing recorded
        raise RunInterrupted("interrupted before the run was recorded; relaunch the same command to resume (saved "
                             "checkpoints and a finished training are kept)") from None


def _execute(cfg: DictConfig, raise_on_failure: bool) -> dict:
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.defaults import check_data_fits

    t_start = time.perf_counter()
    threads = job_threads(cfg)
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)
    eid = evaluation_id(cfg)
    try:
        device = resolve_device(cfg.device)
        t0 = time.perf_counter()
        bundle = load_dataset(cfg.dataset, cfg.data)
        data_s = time.perf_counter() - t0
        check_data_fits(cfg, bundle)  # a conditional GAN without labels, a downstream task without its targets
    except Exception as err:  # nothing trained: the failure is recorded under the config-only id
        cid = config_only_id(cfg)
        _log_failure(raise_on_failure, "run failed before training (%s): %s", cid, err)
        # Failed before too (the data is loaded again on every launch: data that is back, or a fixed root, gets its
        # real training id and runs): keep that record unless retry_failed=true asks to record the new attempt.
        before = read_record(cfg.paths.store_dir, cid, eid)
        if before is not None and before.get("status") == "failed" and not cfg.get("retry_failed", False):
            if not raise_on_failure:  # (a single run raises the new error: its report says the same)
                _skip_failed(cid, eid, before)
            if raise_on_failure:
                raise
            return before
        record = base_record(cfg, cid, eid, None)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        _finish(cfg, record, None)
        if raise_on_failure:
            raise
        return record

    tid = training_id(cfg, bundle.meta)
    run_dir = Path(cfg.paths.runs_dir) / tid
    run_dir.mkdir(parents=True, exist_ok=True)
    # One process per run directory: a duplicate launch (two sweeps, a relaunch while the first still runs) waits here
    # and then finds the work done. The OS releases the lock of a killed process.
    with file_lock(run_dir / RUN_LOCK):
        from medsynbench.benchmark.federated import enabled, run_federated

        if enabled(cfg):  # federated=<preset>: clients, rounds, per-client evaluation (benchmark/federated/)
            return run_federated(cfg, bundle, tid, run_dir, device, raise_on_failure)
        return _execute_locked(cfg, bundle, tid, eid, run_dir, device, data_s, t_start, raise_on_failure)


def _execute_locked(cfg, bundle, tid: str, eid: str, run_dir: Path, device, data_s: float, t_start: float,
                    raise_on_failure: bool) -> dict:
    eval_dir = run_dir / "evaluations" / eid
    # what an earlier attempt killed mid-write left behind (this process holds the run lock; checkpoint and sample
    # folders are cleaned by the training loop)
    for folder, name in ((run_dir, None), (eval_dir, None), (record_path(cfg.paths.store_dir, tid, eid).parent,
                                                             record_path(cfg.paths.store_dir, tid, eid).name)):
        for tmp in remove_stale_temporaries(folder, name) if folder.is_dir() else []:
            log.warning("removed %s, a partial file left by an interrupted attempt", tmp)
    (run_dir / HEARTBEAT_FILE).unlink(missing_ok=True)  # left by a killed attempt (this process holds the lock)
    done = read_record(cfg.paths.store_dir, tid, eid)
    if done is None and (eval_dir / "record.json").is_file():  # killed between the two writes, or a new store
        done = json.loads((eval_dir / "record.json").read_text())
        write_record(cfg.paths.store_dir, done)
    if done is not None and done.get("status") in ("completed", "diverged"):
        if not (eval_dir / "record.json").is_file():
            atomic_write_json(eval_dir / "record.json", done)
        log.info("run %s, evaluation %s: already recorded (%s); nothing to do", tid, eid, record_id(tid, eid))
        return done
    if done is not None and done.get("status") == "failed" and not cfg.get("retry_failed", False):
        msg = _skip_failed(tid, eid, done, raised=raise_on_failure)
        if raise_on_failure:
            raise FailedBefore(msg)
        return done
    # While this process works on the run, <run dir>/heartbeat.json says so (host, pid, step) every few seconds, for
    # `medsynbench status` on any node of a shared file system.
    with Heartbeat(run_dir, tid, eid):
        return _train_and_record(cfg, bundle, tid, eid, run_dir, device, data_s, t_start, raise_on_failure)


class FailedBefore(RuntimeError):
    """A single run's relaunch found the run recorded as failed (and retry_failed is not set)."""


def _skip_failed(tid: str, eid: str, record: dict, raised: bool = False) -> str:
    """A run recorded as failed is not retried by a relaunch unless retry_failed=true; say so (log and stdout, or,
    when the caller raises it as FailedBefore, the log files: the CLI prints the raised error)."""
    msg = (f"run {tid}, evaluation {eid}: failed before: {record.get('error', 'unknown error')}; "
           "relaunch with retry_failed=true to retry")
    if raised:
        _log_failure(True, "%s", msg, level=logging.WARNING)
        return msg
    log.warning("%s", msg)
    print(f"[medsynbench] {msg}")
    return msg


def _log_failure(raised: bool, msg: str, *args, level: int = logging.ERROR) -> None:
    """Log a run's failure. One that is re-raised (a single run) goes to the log files only: the CLI reports the
    raised error once on stderr, and the console would show it twice. In a multirun it goes to the console too."""
    if not raised:
        log.log(level, msg, *args)
        return
    record = log.makeRecord(log.name, level, __file__, 0, msg, args, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and level >= handler.level:
            handler.handle(record)


def _train_and_record(cfg, bundle, tid: str, eid: str, run_dir: Path, device, data_s: float, t_start: float,
                      raise_on_failure: bool) -> dict:
    from medsynbench.benchmark.evaluate import EVALUATION_FIELDS, evaluate_gan
    from medsynbench.benchmark.train_loop import StopRequested, train

    eval_dir = run_dir / "evaluations" / eid
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    attached = _attach_file_log(run_dir)
    record = base_record(cfg, tid, eid, run_dir)
    record.update(device=str(device), data=bundle.meta)
    record["timings"]["data_s"] = data_s
    training_file = run_dir / "training.json"
    try:
        training = json.loads(training_file.read_text()) if training_file.is_file() else None
        if training is None:
            log.info("run %s: %d train / %d test images, device %s", tid, len(bundle.train), len(bundle.test), device)
            result = train(cfg, bundle, run_dir, device)
            training = {"status": result.status, "steps_done": result.steps_done, "resumed_from": result.resumed_from,
                        "final_losses": result.last_losses, "train_s": result.seconds,
                        "data": data_content(bundle.meta)}
            atomic_write_json(training_file, training)
            gan, record["evaluation_only"] = result.gan, False
        else:
            gan, record["evaluation_only"] = None, True
        record.update(status=training["status"], steps_done=training["steps_done"],
                      resumed_from=training["resumed_from"], final_losses=training["final_losses"])
        record["timings"]["train_s"] = training["train_s"] if not record["evaluation_only"] else 0.0
        if training["status"] == "completed" and cfg.evaluate:
            step = evaluated_step(cfg)
            if gan is None or step != training["steps_done"]:
                if record["evaluation_only"]:
                    msg = f"training {tid} is complete; evaluating only (evaluation {eid}, checkpoint step {step})"
                    log.info(msg)
                    print(f"[medsynbench] {msg}")
                gan = _load_generator(run_dir, step, device)
            record["evaluated_step"] = step
            evaluation = evaluate_gan(cfg, gan, bundle, device, eval_dir)
            for key in EVALUATION_FIELDS:
                if key in evaluation:
                    record[key] = evaluation[key]
            record["timings"].update(evaluation["timings"])
    except StopRequested:  # a simulated kill (train.stop_after): nothing is recorded, as after a real one
        raise
    except Exception as err:  # recorded, then re-raised only outside a multirun
        _log_failure(raise_on_failure, "run %s failed: %s", tid, err)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        record["timings"]["total_s"] = time.perf_counter() - t_start
        _finish(cfg, record, None)
        if raise_on_failure:
            raise
        return record
    else:
        record["timings"]["total_s"] = time.perf_counter() - t_start
        log.info("timings: %s", timing_summary(record["timings"]))
        return _finish(cfg, record, eval_dir)
    finally:
        _detach_file_log(attached)


def timing_summary(timings: dict) -> str:
    """One line of a record's timings: data, training, sampling, feature extraction, each metric, each downstream
    scenario, total (seconds)."""
    order = ("data_s", "train_s", "sample_s", "sample_downstream_s")
    keys = [k for k in order if k in timings] + [k for k in timings if k not in order and k != "total_s"]
    keys += ["total_s"] if "total_s" in timings else []
    return ", ".join(f"{'downstream (all)' if k == 'downstream_s' else k[:-2]} {timings[k]:.1f} s" for k in keys)


def summary_lines(record: dict) -> list[str]:
    """What ``medsynbench train`` prints when a run ends: status and scores, the sample counts used, and every
    distinct small-sample warning of the metrics."""
    scores = {m["metric"]: round(m["value"], 5) for m in record.get("metrics", []) if m.get("value") is not None}
    scores.update({f"{d['metric']}@{d['train_on']}": round(d["value"], 4)
                   for d in record.get("downstream", []) if not d.get("skipped") and d.get("value") is not None})
    lines = [f"[medsynbench] {record['run_id']}: {record['status']} {json.dumps(scores)}"]
    counts = record.get("sample_counts")
    if counts:
        downstream = ", ".join(f"{k} {v}" for k, v in counts.get("n_synthetic_downstream", {}).items()) or "none"
        lines.append(f"[medsynbench] sample counts: real test {counts['n_real_test']}, real train "
                     f"{counts['n_real_train']}; synthetic for metrics {counts['n_synthetic_metrics']}; synthetic for "
                     f"downstream: {downstream}")
    warnings: dict[str, list[str]] = {}
    for m in record.get("metrics", []):
        if m.get("warning"):
            warnings.setdefault(m["warning"], []).append(m["metric"])
    lines += [f"[medsynbench] warning ({', '.join(names)}): {text}" for text, names in warnings.items()]
    return lines


def _load_generator(run_dir: Path, step: int, device):
    """The trained GAN at checkpoint ``step`` of a run directory (weights-only, verified load)."""
    from medsynbench.benchmark.reevaluate import load_run

    path = checkpoint_path(run_dir, step)
    if not path.is_file():
        have = ", ".join(p.name for p in checkpoint_paths(run_dir)) or "none"
        raise FileNotFoundError(f"{path}: no checkpoint of step {step} (evaluate_step={step}); this run has "
                                f"{have} (keep every snapshot with train.keep_checkpoints=true)")
    _, gan, _ = load_run(run_dir, device, checkpoint=path)
    return gan

"""``medsynbench <command> [hydra overrides]`` — the console entry point.

Each command is a Hydra app over the config tree in ``conf/``; ``medsynbench <command> --help`` shows its config
groups and options. Also available as ``python -m medsynbench <command> ...``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from medsynbench import config_dir
from medsynbench.benchmark.config import EvaluateFolderConfig, RunConfig, register_configs

register_configs()
CONF_DIR = str(config_dir())
log = logging.getLogger("medsynbench")


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train_app(cfg: DictConfig) -> float | None:
    """Train one run (then evaluate and record it unless evaluate=false). Returns the value of ``objective.metric``
    from the run's record (what an Optuna sweep optimises; None without an objective). A failed or diverged run, a
    missing metric or a non-finite value raise (benchmark/objective.py), so that a sweeper records a failed trial;
    the run's record is stored either way, and a config whose record exists returns it without retraining."""
    from medsynbench.benchmark.run import execute_run

    record = execute_run(cfg, raise_on_failure=not _in_multirun())
    summary = {m["metric"]: round(m["value"], 5) for m in record.get("metrics", []) if m.get("value") is not None}
    summary.update({f"{d['metric']}@{d['train_on']}": round(d["value"], 4)
                    for d in record.get("downstream", []) if not d.get("skipped") and d.get("value") is not None})
    print(f"[medsynbench] {record['run_id']}: {record['status']} {json.dumps(summary)}")
    metric = cfg.objective.metric if cfg.get("objective") is not None else None
    if not metric:
        return None
    from medsynbench.benchmark.objective import objective_value
    from medsynbench.benchmark.utils import atomic_write_json

    note = {"metric": metric, "value": None, "status": record["status"], "training_id": record.get("training_id"),
            "evaluation_id": record.get("evaluation_id"), "run_id": record.get("run_id")}
    try:
        note["value"] = objective_value(record, metric, cfg.objective.direction)
        return note["value"]
    except Exception as err:
        note["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:  # read by the Optuna sweeper (hydra_plugins/medsynbench_optuna_sweeper): trial -> run ids
        if _in_multirun():
            atomic_write_json(Path(HydraConfig.get().runtime.output_dir) / "objective.json", note)
        print(f"[medsynbench] objective {metric} = {note['value']}" + (f" ({note['error']})" if "error" in note
                                                                     else ""))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> None:
    """Evaluate an existing run directory (metrics + downstream) and append a record."""
    from medsynbench.benchmark.reevaluate import evaluate_run_dir

    record = evaluate_run_dir(cfg)
    print(f"[medsynbench] evaluated {record['run_id']}: {len(record['metrics'])} metrics, "
          f"{len(record['downstream'])} downstream records")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate_folder")
def evaluate_folder_app(cfg: DictConfig) -> None:
    """Score a folder of images against a dataset config and append a record."""
    from medsynbench.benchmark.evaluate_folder import evaluate_folder
    from medsynbench.benchmark.validate import validate_evaluate_folder_config

    validate_evaluate_folder_config(cfg)  # unknown keys fail here, before any image is read
    record = evaluate_folder(cfg)
    summary = {m["metric"]: round(m["value"], 5) for m in record["metrics"]}
    print(f"[medsynbench] {record['run_id']}: {json.dumps(summary)}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="leaderboard")
def leaderboard_app(cfg: DictConfig) -> None:
    """Print and write a leaderboard (Markdown + CSV + JSON sidecar) of one or more metrics from the results store."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.leaderboard import write_leaderboard

    metric = OmegaConf.to_container(cfg.metric) if OmegaConf.is_list(cfg.metric) else str(cfg.metric)
    group_by = None if cfg.group_by is None else list(cfg.group_by)
    _, text, path = write_leaderboard(cfg.paths.store_dir, cfg.paths.leaderboard_dir, metric, group_by,
                                      cfg.include_failed, OmegaConf.to_container(cfg.filter), cfg.ci)
    print(text)
    print(f"[medsynbench] written {path}, {path.with_suffix('.csv').name} and {path.with_suffix('.json').name}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="status")
def status_app(cfg: DictConfig) -> None:
    """How far a sweep (or an experiment) is: done, running, failed, diverged, interrupted, pending runs."""
    from medsynbench.benchmark.status import format_report, status_report

    if cfg.format not in ("table", "json"):
        raise ValueError(f"format must be table or json, got {cfg.format!r}")
    report = status_report(cfg)
    print(json.dumps(report, indent=2, default=str) if cfg.format == "json" else format_report(report))


COMMANDS = {
    "train": (train_app, "train one run (or a --multirun sweep), then evaluate and record it"),
    "evaluate": (evaluate_app, "evaluate an existing run directory: run_dir=<path>"),
    "evaluate-folder": (evaluate_folder_app, "score a folder of images against a dataset: folder=<dir> dataset=<name>"),
    "leaderboard": (leaderboard_app, "leaderboards from the results store: metric=<name> | metric=[a,b]"),
    "report": (leaderboard_app, "alias of leaderboard"),
    "status": (status_app, "runs of a sweep: done/running/failed/pending (sweep_dir=<dir>|latest, experiment_name=)"),
    "sweep-status": (status_app, "alias of status"),
}


def usage() -> str:
    lines = ["usage: medsynbench <command> [hydra overrides] [--help]", "", "commands:"]
    lines += [f"  {name:<16} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Each command is a Hydra app: `medsynbench <command> --help` lists its config groups.",
              "Examples:", "  medsynbench train experiment=quickstart",
              "  medsynbench train --multirun gan=dcgan data.train_size=50,100 seed=1,2",
              "  medsynbench leaderboard 'metric=[kid_unet,dice_unet@synthetic]' +filter.dataset.name=isic_mini",
              "  medsynbench status sweep_dir=latest"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [f"medsynbench {command}", *rest]
    try:
        COMMANDS[command][0]()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            _explain_schema_error(command, rest)
        raise


SCHEMAS = {"train": "config", "evaluate-folder": "evaluate_folder"}


def _explain_schema_error(command: str, args: list[str]) -> None:
    """Hydra refuses a misspelt key of a typed group while composing (``Key 'imag_size' not in 'DataConfig'``) and
    names the file, but not the valid keys. Compose again (first value of each sweep) to find such an error, and
    print the valid keys of that node with the closest match."""
    import difflib
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    if command not in SCHEMAS:
        return
    config_dirs, overrides, it = [], [], iter(args)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            config_dirs.append(next(it, ""))
        elif arg.startswith("--config-dir="):
            config_dirs.append(arg.split("=", 1)[1])
        elif arg.startswith("-") or arg.startswith(("hydra.", "hydra/", "+hydra")):
            continue
        else:  # a sweep a,b,c: its first value composes like every other
            key, _, value = arg.partition("=")
            overrides.append(f"{key}={value.split(',')[0]}" if "," in value and "[" not in value else arg)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            if config_dirs:
                paths = ",".join(f"file://{Path(d).resolve()}" for d in config_dirs)
                overrides.append(f"hydra.searchpath=[{paths}]")
            compose(config_name=SCHEMAS[command], overrides=overrides)
    except ConfigCompositionException as err:
        found = re.search(r"full_key: (\S+)", str(err.__cause__ or err))
        if not found:
            return
        parent, _, bad = found.group(1).rpartition(".")
        base = OmegaConf.structured(RunConfig if command == "train" else EvaluateFolderConfig)
        node = OmegaConf.select(base, parent) if parent else base
        if OmegaConf.is_dict(node):
            valid = sorted(str(k) for k in node.keys())
            close = difflib.get_close_matches(bad, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            print(f"[medsynbench] unknown key {found.group(1)!r}.{hint} Valid keys of {parent or 'the config'}: "
                  f"{', '.join(valid)}", file=sys.stderr)
    except Exception:  # the explanation is a courtesy: never hide Hydra's own message behind a second error
        return
    finally:
        GlobalHydra.instance().clear()


if __name__ == "__main__":
    main()

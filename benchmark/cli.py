"""``medsynbench <command> [hydra overrides]`` — the console entry point.

Each command is a Hydra app over the config tree in ``conf/``; ``medsynbench <command> --help`` shows its config
groups and options. Also available as ``python -m benchmark <command> ...``.
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

from benchmark.config import register_configs

register_configs()
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger("medsynbench")


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train_app(cfg: DictConfig) -> None:
    """Train one run (then evaluate and record it unless evaluate=false)."""
    from benchmark.run import execute_run

    record = execute_run(cfg, raise_on_failure=not _in_multirun())
    summary = {m["metric"]: round(m["value"], 5) for m in record.get("metrics", [])}
    summary.update({f"{d['metric']}@{d['train_on']}": round(d["value"], 4)
                    for d in record.get("downstream", []) if not d.get("skipped")})
    print(f"[medsynbench] {record['run_id']}: {record['status']} {json.dumps(summary)}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> None:
    """Evaluate an existing run directory (metrics + downstream) and append a record."""
    from benchmark.reevaluate import evaluate_run_dir

    record = evaluate_run_dir(cfg)
    print(f"[medsynbench] evaluated {record['run_id']}: {len(record['metrics'])} metrics, "
          f"{len(record['downstream'])} downstream records")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate_folder")
def evaluate_folder_app(cfg: DictConfig) -> None:
    """Score a folder of images against a dataset config and append a record."""
    from benchmark.evaluate_folder import evaluate_folder

    record = evaluate_folder(cfg)
    summary = {m["metric"]: round(m["value"], 5) for m in record["metrics"]}
    print(f"[medsynbench] {record['run_id']}: {json.dumps(summary)}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="leaderboard")
def leaderboard_app(cfg: DictConfig) -> None:
    """Print and write a leaderboard (Markdown + CSV) of one metric from the results store."""
    from benchmark.leaderboard import write_leaderboard

    _, text, path = write_leaderboard(cfg.paths.store_dir, cfg.paths.leaderboard_dir, cfg.metric,
                                      list(cfg.group_by), cfg.include_failed)
    print(text)
    print(f"[medsynbench] written {path} and {path.with_suffix('.csv')}")


COMMANDS = {
    "train": (train_app, "train one run (or a --multirun sweep), then evaluate and record it"),
    "evaluate": (evaluate_app, "evaluate an existing run directory: run_dir=<path>"),
    "evaluate-folder": (evaluate_folder_app, "score a folder of images against a dataset: folder=<dir> dataset=<name>"),
    "leaderboard": (leaderboard_app, "leaderboard of one metric from the results store: metric=<name>"),
    "report": (leaderboard_app, "alias of leaderboard"),
}


def usage() -> str:
    lines = ["usage: medsynbench <command> [hydra overrides] [--help]", "", "commands:"]
    lines += [f"  {name:<12} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Each command is a Hydra app: `medsynbench <command> --help` lists its config groups.",
              "Examples:", "  medsynbench train experiment=quickstart",
              "  medsynbench train --multirun gan=dcgan data.train_size=50,100 seed=1,2",
              "  medsynbench leaderboard metric=fd_unet group_by=[gan.name,data.train_size]"]
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
    COMMANDS[command][0]()


if __name__ == "__main__":
    main()

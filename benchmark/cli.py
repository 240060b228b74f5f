"""``medsynbench <command> [hydra overrides]`` — the console entry point.

Each command is a Hydra app over the config tree in ``conf/``; ``medsynbench <command> --help`` shows its config
groups and options. Also available as ``python -m medsynbench <command> ...``.

Errors: a user error (unknown key or group option, a bad value or path, bad data) prints one message on stderr and
exits 2; any other error prints its traceback and exits 1; ``MEDSYNBENCH_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``)
shows the complete traceback of every error.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from medsynbench import config_dir
from medsynbench.benchmark.config import (DatasetCheckConfig, EvaluateConfig, EvaluateFolderConfig, LeaderboardConfig,
                                           ReportConfig, RunConfig, StatusConfig, register_configs)

register_configs()
from medsynbench.benchmark.latent import ProjectConfig, SefaConfig  # noqa: E402  (registered by register_configs)
from medsynbench.benchmark.turing.config import TuringConfig, register_turing_config  # noqa: E402

register_turing_config()
from medsynbench.benchmark.zoo.cli import ExportConfig, ZooConfig, register as register_zoo_configs  # noqa: E402

register_zoo_configs()
CONF_DIR = str(config_dir())
log = logging.getLogger("medsynbench")


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


# --- errors: a user error is one message on stderr (exit 2), a bug keeps its traceback (exit 1) ----------------------
DEBUG_ENV = "MEDSYNBENCH_DEBUG"  # =1: every error with its complete traceback (as does Hydra's HYDRA_FULL_ERROR=1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def debug_enabled() -> bool:
    return _flag(DEBUG_ENV) or _flag("HYDRA_FULL_ERROR")


_main = {"reporting": False}  # main() reports errors (and the debug flag is off): task functions hand user errors up


def is_user_error(err: BaseException) -> bool:
    """Errors in what the user gave (a config key, a value, a path, the data), whose message says what is wrong and
    where: ConfigError (benchmark/validate.py), DataError (the data layer), FailedBefore (a run recorded as failed),
    Hydra's composition and override errors (unknown group option, misspelt key of a typed node, bad override
    syntax, missing --config-dir), a mandatory value left unset or an unresolvable interpolation, a file or folder
    that does not exist. Anything else is a bug and keeps its traceback."""
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from medsynbench.benchmark.data.errors import DataError
    from medsynbench.benchmark.run import FailedBefore
    from medsynbench.benchmark.validate import ConfigError

    if isinstance(err, InstantiationException):  # wraps what a constructor raised: a user error only if that was one
        return err.__cause__ is not None and is_user_error(err.__cause__)
    return isinstance(err, (ConfigError, DataError, FailedBefore, CompactHydraException, MissingMandatoryValue,
                            InterpolationResolutionError, FileNotFoundError, NotADirectoryError))


class _UserErrorOfRun(BaseException):
    """Carries a user error of a single run past Hydra's job runner (which would print "Error executing job with
    overrides: ..." before re-raising it) to :func:`main`, which reports it once. A BaseException, so that Hydra
    catches it nowhere on the way."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def reports_user_errors(task):
    """Decorator of a command's task function (under ``@hydra.main``): in a single run, a user error goes straight to
    :func:`main`. In a multirun every error goes through Hydra as before (its launcher and sweeper record failed jobs
    and name the job's overrides); with the debug flag, or when the app is called other than through main(), nothing
    changes."""

    @functools.wraps(task)
    def run(cfg):
        try:
            return task(cfg)
        except Exception as err:
            if _main["reporting"] and not _in_multirun() and is_user_error(err):
                raise _UserErrorOfRun(err) from err
            raise

    return run


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
@reports_user_errors
def train_app(cfg: DictConfig) -> float | None:
    """Train one run (then evaluate and record it unless evaluate=false). Returns the value of ``objective.metric``
    from the run's record (what an Optuna sweep optimises; None without an objective). A failed or diverged run, a
    missing metric or a non-finite value raise (benchmark/objective.py), so that a sweeper records a failed trial;
    the run's record is stored either way, and a config whose record exists returns it without retraining."""
    from medsynbench.benchmark.run import RunInterrupted, execute_run, summary_lines

    try:
        record = execute_run(cfg, raise_on_failure=not _in_multirun())
    except RunInterrupted as stop:  # Ctrl-C: one line (what was saved, how to resume), exit status 130
        print(f"[medsynbench] {stop}", file=sys.stderr)
        raise SystemExit(130) from None
    print("\n".join(summary_lines(record)))  # scores, sample counts, small-sample warnings
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
@reports_user_errors
def evaluate_app(cfg: DictConfig) -> None:
    """Evaluate an existing run directory (metrics + downstream) and append a record."""
    from medsynbench.benchmark.reevaluate import evaluate_run_dir

    record = evaluate_run_dir(cfg)
    print(f"[medsynbench] evaluated {record['run_id']}: {len(record['metrics'])} metrics, "
          f"{len(record['downstream'])} downstream records")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate_folder")
@reports_user_errors
def evaluate_folder_app(cfg: DictConfig) -> None:
    """Score a folder of images against a dataset config and append a record."""
    from medsynbench.benchmark.evaluate_folder import evaluate_folder
    from medsynbench.benchmark.validate import validate_evaluate_folder_config

    validate_evaluate_folder_config(cfg)  # unknown keys fail here, before any image is read
    record = evaluate_folder(cfg)
    summary = {m["metric"]: round(m["value"], 5) for m in record["metrics"]}
    print(f"[medsynbench] {record['run_id']}: {json.dumps(summary)}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="leaderboard")
@reports_user_errors
def leaderboard_app(cfg: DictConfig) -> None:
    """Print and write a leaderboard (Markdown, CSV, LaTeX, HTML + JSON sidecar) of one or more metrics from the
    results store; without ``metric`` (or with a metric the store lacks) say which metric names the store has."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.leaderboard import UnknownMetricError, metrics_message, write_leaderboard
    from medsynbench.benchmark.validate import ConfigError

    if OmegaConf.is_missing(cfg, "metric"):  # list the store's metric names instead of a MissingMandatoryValue
        raise ConfigError(metrics_message(cfg.paths.store_dir))
    metric = OmegaConf.to_container(cfg.metric) if OmegaConf.is_list(cfg.metric) else str(cfg.metric)
    group_by = None if cfg.group_by is None else list(cfg.group_by)
    try:
        _, text, path = write_leaderboard(cfg.paths.store_dir, cfg.paths.leaderboard_dir, metric, group_by,
                                          cfg.include_failed, OmegaConf.to_container(cfg.filter), cfg.ci,
                                          cfg.ci_method.value, cfg.n_boot, cfg.boot_seed)
    except UnknownMetricError as err:
        raise ConfigError(metrics_message(cfg.paths.store_dir, err.missing, err.available)) from None
    print(text)
    print(f"[medsynbench] written {path} and {', '.join(path.with_suffix(s).name for s in ('.csv', '.tex', '.html'))}"
          f" ({path.with_suffix('.json').name}: grouping, protocol, footnotes)")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
@reports_user_errors
def report_app(cfg: DictConfig) -> None:
    """The four studies' tables and figures from the results store (Markdown, CSV, LaTeX, PNG, SVG, HTML)."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.report import build_report

    out_dir = Path(cfg.out_dir)
    print(f"[medsynbench] report from {cfg.paths.store_dir} -> {out_dir}")
    sections = build_report(
        cfg.paths.store_dir, out_dir, OmegaConf.to_container(cfg.filter),
        sections=None if cfg.sections is None else list(cfg.sections), include_failed=cfg.include_failed,
        fd_metric=cfg.fd_metric, downstream_metric=cfg.downstream_metric, ci=cfg.ci, n_boot=cfg.n_boot,
        seed=cfg.seed, runs_dir=cfg.paths.runs_dir, sweep_dir=cfg.sweep_dir, results_dir=cfg.paths.results_dir,
        title=cfg.title, progress=lambda msg: print(f"[medsynbench]   {msg}", flush=True))
    built = sum(not s.empty for s in sections)
    print(f"[medsynbench] written {out_dir / 'report.md'}" + (f" and {out_dir / 'report.html'}"
                                                              if (out_dir / "report.html").is_file() else "")
          + f": {built} of {len(sections)} sections built, tables in {out_dir / 'tables'}, figures in "
          f"{out_dir / 'figures'}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="status")
@reports_user_errors
def status_app(cfg: DictConfig) -> None:
    """How far a sweep (or an experiment) is: done, running, failed, diverged, interrupted, pending runs."""
    from medsynbench.benchmark.status import format_report, status_report

    if cfg.format not in ("table", "json"):
        from medsynbench.benchmark.validate import ConfigError

        raise ConfigError(f"format must be table or json, got {cfg.format!r}")
    report = status_report(cfg)
    print(json.dumps(report, indent=2, default=str) if cfg.format == "json" else format_report(report))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="dataset_check")
@reports_user_errors
def dataset_check_app(cfg: DictConfig) -> None:
    """Load a dataset config as train would, without training; report what was found (exit 1 if the data is refused)."""
    from medsynbench.benchmark.data.check import check_dataset, format_report

    if cfg.format not in ("text", "json"):
        raise ValueError(f"format must be text or json, got {cfg.format!r}")
    report = check_dataset(cfg.dataset, cfg.data, imbalance_ratio=cfg.imbalance_ratio)
    print(json.dumps(report, indent=2, default=str) if cfg.format == "json" else format_report(report))
    if report["errors"]:
        raise SystemExit(1)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="project")
@reports_user_errors
def project_app(cfg: DictConfig) -> None:
    """Project real images into a generator's latent space; authenticity by projection (benchmark/latent.py)."""
    from medsynbench.benchmark.latent import project_command

    s = project_command(cfg)
    d = s["distance_to_projection"]
    print(f"[medsynbench] projected {d['n']} images into {s['protocol']['space']}: {s['embedding']['name']} "
          f"{s['protocol']['embedding']['metric']} distance to projection mean {d['mean']:.4g}, median "
          f"{d['median']:.4g}, quartiles {d['q1']:.4g} / {d['q3']:.4g}; too close (< Q1 real-real "
          f"{s['q1_real_real']:.4g}): {s['n_too_close']} ({s['fraction_too_close']:.1%}); outputs in {s['out_dir']}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sefa")
@reports_user_errors
def sefa_app(cfg: DictConfig) -> None:
    """SeFa directions, edit grids, walks and a slider page (benchmark/latent.py)."""
    from medsynbench.benchmark.latent import sefa_command

    s = sefa_command(cfg)
    print(f"[medsynbench] {len(s['eigenvalues'])} SeFa directions in {s['space']} ({', '.join(s['layers'])}), "
          f"eigenvalues {', '.join(f'{v:.3g}' for v in s['eigenvalues'])}; grid {s['files']['grid']}, "
          f"sliders {s['files']['slider']}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="turing")
@reports_user_errors
def turing_app(cfg: DictConfig) -> None:
    """A visual Turing test: create a study, serve it, add raters, follow progress, analyse (docs/turing.md)."""
    from medsynbench.benchmark.turing.actions import run_action

    run_action(cfg)


def _with_action_word(app):
    """``medsynbench <command> <action> [overrides]``: the action word becomes ``action=<action>`` (an unknown one
    is named by the app's action check)."""

    def command() -> None:
        if len(sys.argv) > 1 and "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
            sys.argv[1] = f"action={sys.argv[1]}"
        app()

    return command


turing_command = _with_action_word(turing_app)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
@reports_user_errors
def export_app(cfg: DictConfig) -> None:
    """A trained run (or a sweep's best run by a metric) as a safe model package (docs/zoo.md)."""
    from medsynbench.benchmark.zoo.cli import export_task

    export_task(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="zoo")
@reports_user_errors
def zoo_app(cfg: DictConfig) -> None:
    """Generator zoo: registries, search, rank, generate, grids (docs/zoo.md)."""
    from medsynbench.benchmark.zoo.cli import zoo_task

    zoo_task(cfg)


zoo_command = _with_action_word(zoo_app)


COMMANDS = {
    "train": (train_app, "train one run (or a --multirun sweep), then evaluate and record it"),
    "evaluate": (evaluate_app, "evaluate an existing run directory: run_dir=<path>"),
    "evaluate-folder": (evaluate_folder_app, "score a folder of images against a dataset: folder=<dir> dataset=<name>"),
    "leaderboard": (leaderboard_app, "leaderboards from the results store: metric=<name> | metric=[a,b]"),
    "report": (report_app, "the papers' tables and figures from the results store: out_dir=<dir> +filter.<key>=..."),
    "status": (status_app, "runs of a sweep: done/running/failed/pending (sweep_dir=<dir>|latest, experiment_name=)"),
    "sweep-status": (status_app, "alias of status"),
    "dataset-check": (dataset_check_app, "load a dataset without training and report/warn: dataset=<name> "
                                         "[--config-dir <dir>]"),
    "project": (project_app, "project real images into a GAN's latent space + authenticity: run_dir=<dir> "
                             "[images=test|<folder>]"),
    "sefa": (sefa_app, "SeFa latent directions, edit grids, walks, slider page: run_dir=<dir> k=5 strengths=[-3,0,3]"),
    "turing": (turing_command, "visual Turing test web app: turing create|serve|add-rater|progress|results "
                               "study_dir=<dir> ..."),
    "export": (export_app, "a run as a safe model package: run_dir=<dir> | sweep_dir=<dir> metric=<name>"),
    "zoo": (zoo_command, "generator zoo: zoo list|find|rank|generate|find-rank-generate|add|import-medigan|grids"
                         "|verify registries=[...] ..."),
}


def usage() -> str:
    lines = ["usage: medsynbench <command> [hydra overrides] [--help]", "", "commands:"]
    lines += [f"  {name:<16} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Each command is a Hydra app: `medsynbench <command> --help` lists its config groups.",
              "Examples:", "  medsynbench train experiment=quickstart",
              "  medsynbench train --multirun gan=dcgan data.train_size=50,100 seed=1,2",
              "  medsynbench leaderboard 'metric=[kid_unet,dice_unet@synthetic]' +filter.dataset.name=isic_mini",
              "  medsynbench status sweep_dir=latest",
              "",
              "Errors in what you gave (a config key, a value, a path, the data) print one message and exit 2;",
              f"{DEBUG_ENV}=1 (or HYDRA_FULL_ERROR=1) shows every error with its complete traceback."]
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
    debug = debug_enabled()
    # Hydra's run_and_report prints its own report of an error (a traceback, or the compact message of a composition
    # error) and exits 1; under HYDRA_FULL_ERROR=1 it re-raises instead, so that this function reports every error
    # once: a user error as one message, a bug with its traceback.
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _main["reporting"] = not debug
    try:
        COMMANDS[command][0]()
    except _UserErrorOfRun as carried:
        _report(command, carried.error, debug)
    except Exception as err:  # noqa: BLE001 - every error ends here: reported once, then the exit status says it
        _report(command, err, debug)
    finally:
        _main["reporting"] = False
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _report(command: str, err: BaseException, debug: bool) -> None:
    """Exit for an error of a command: 2 with one message on stderr for a user error, 1 with the traceback (from the
    command's own frames on) for anything else; with the debug flag, re-raise it with the complete traceback."""
    if debug:
        raise err
    if is_user_error(err):
        print(f"medsynbench {command}: error: {user_message(command, err)}", file=sys.stderr)
        raise SystemExit(2) from None
    tb = traceback.TracebackException.from_exception(err)
    frames = list(tb.stack)
    job = [i for i, f in enumerate(frames) if f.name == "run_job" and f"{os.sep}hydra{os.sep}" in f.filename]
    if job:  # drop Hydra's frames above the task function, as Hydra's own report does
        tb.stack = traceback.StackSummary.from_list(frames[job[-1] + 1:])
    sys.stderr.write("".join(tb.format()))
    sys.stderr.write(f"(set {DEBUG_ENV}=1 for the complete traceback)\n")
    raise SystemExit(1) from None


SCHEMAS = {"train": RunConfig, "evaluate-folder": EvaluateFolderConfig, "evaluate": EvaluateConfig,
           "leaderboard": LeaderboardConfig, "status": StatusConfig, "dataset-check": DatasetCheckConfig,
           "report": ReportConfig, "sweep-status": StatusConfig, "project": ProjectConfig, "sefa": SefaConfig,
           "turing": TuringConfig, "export": ExportConfig, "zoo": ZooConfig}


def user_message(command: str, err: BaseException) -> str:
    """The message of a user error: the error's own text (for a Hydra composition error also its OmegaConf cause),
    without OmegaConf's internal type lines, plus what to do: the valid keys of a misspelt key's node and the closest
    match, or how to set a missing mandatory value."""
    import re

    from hydra.errors import CompactHydraException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    text = str(err)
    cause = err.__cause__
    if isinstance(err, CompactHydraException) and isinstance(cause, OmegaConfBaseException) \
            and str(cause) not in text:
        text = f"{text}\n{cause}"
    text = "\n".join(line for line in text.splitlines()
                     if not re.match(r"\s*(reference_type|object_type)=", line)).strip()
    found = re.search(r"full_key: (\S+)", text)
    if isinstance(err, MissingMandatoryValue) or isinstance(cause, MissingMandatoryValue):
        if found:
            text += f"\nset it on the command line: {found.group(1)}=<value>   (see `medsynbench {command} --help`)"
    elif found and isinstance(err, CompactHydraException):
        hint = _valid_keys_hint(command, found.group(1))
        if hint:  # a typed node refuses an added key too: Hydra's "To append to your config use +key=..." misleads
            text = "\n".join(line for line in text.splitlines() if not line.startswith("To append to your config"))
        text += hint
    return text


def _valid_keys_hint(command: str, full_key: str) -> str:
    """Hydra refuses a misspelt key of a typed node while composing (``Key 'imag_size' not in 'DataConfig'``) and
    names the file, but not the valid keys: name them, with the closest match."""
    import difflib

    from omegaconf import OmegaConf

    if command not in SCHEMAS:
        return ""
    parent, _, bad = full_key.rpartition(".")
    try:
        base = OmegaConf.structured(SCHEMAS[command])
        node = OmegaConf.select(base, parent) if parent else base
    except Exception:  # noqa: BLE001 - the hint is a courtesy: never hide the message behind a second error
        return ""
    if not OmegaConf.is_dict(node) or bad in node:
        return ""
    valid = sorted(str(k) for k in node.keys())
    close = difflib.get_close_matches(bad, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"\nunknown key {full_key!r}.{hint} Valid keys of {parent or 'the config'}: {', '.join(valid)}"


if __name__ == "__main__":
    main()

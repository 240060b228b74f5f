"""User errors through the real CLI: one message on stderr, no traceback, exit 2; tracebacks with the debug flag;
bugs keep theirs; a multirun records a job's user error as before.

Each command is a separate `python -m medsynbench` process (a few seconds of imports each); the independent ones run
four at a time in a module fixture, and the tests read their outcomes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from medsynbench.benchmark.store import load_records

# (id, command line, text that must appear exactly once, more text that must appear); {tmp}: the case's folder
CASES = [
    ("unknown group option", ["train", "gan=no_such_gan"], "Could not find 'gan/no_such_gan'", "dcgan"),
    ("misspelt key of a typed group", ["train", "data.imag_size=32"], "Key 'imag_size' not in 'DataConfig'",
     "Did you mean 'image_size'? Valid keys of data: color,"),
    ("missing mandatory value", ["evaluate-folder"], "Missing mandatory value: folder",
     "set it on the command line: folder=<value>"),
    ("ConfigError", ["train", "+gan.no_such_key=1"], "unknown key 'gan.no_such_key'",
     "from: command-line override '+gan.no_such_key=1'"),
    ("DataError", ["train", "dataset.root={tmp}/no_such_dataset"], "dataset root not found", "no_such_dataset"),
    ("bad path", ["evaluate", "run_dir={tmp}/no_such_run"], "is not a medsynbench run directory", "no_such_run"),
    ("missing --config-dir", ["train", "--config-dir", "{tmp}/no_such_conf"], "Additional config directory",
     "no_such_conf"),
    ("bad value", ["status", "format=xml"], "format must be table or json", "'xml'"),
]
CASE = {c[0]: c[1:] for c in CASES}
DEBUG_CASES = [("MEDSYNBENCH_DEBUG", "unknown group option"), ("MEDSYNBENCH_DEBUG", "ConfigError"),
               ("MEDSYNBENCH_DEBUG", "missing mandatory value"), ("HYDRA_FULL_ERROR", "ConfigError")]

BOOM = """
import os

import hydra

from medsynbench.benchmark import cli
from medsynbench.benchmark.data.errors import DataError


@hydra.main(version_base="1.3", config_path=cli.CONF_DIR, config_name="status")
@cli.reports_user_errors
def boom(cfg):
    if os.environ.get("BOOM_USER"):
        raise DataError("some/file.png: a user error")
    return {}["a bug in a command"]


cli.COMMANDS["boom"] = (boom, "raises")
cli.main(["boom", "paths.results_dir=%s"])
"""


def _env(extra: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("MEDSYNBENCH_DEBUG", "HYDRA_FULL_ERROR")}
    return {**clean, "OMP_NUM_THREADS": "1", **(extra or {})}


def _run(folder: Path, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`argv` (``{tmp}`` -> folder) from the empty folder/cwd, results under folder/results, without debug flags."""
    (folder / "cwd").mkdir(parents=True, exist_ok=True)
    argv = [a.replace("{tmp}", str(folder)) for a in argv]
    return subprocess.run(argv, cwd=folder / "cwd", capture_output=True, text=True, env=_env(env), timeout=600,
                          check=False)


def _cli(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(folder, [sys.executable, "-m", "medsynbench", *args, "paths.results_dir={tmp}/results"], env)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every independent command of this module, run four at a time: {key: (folder, CompletedProcess)}."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "boom.py").write_text(BOOM % (root / "boom_results"))
    jobs = {("case", name): lambda f, a=args: _cli(f, *a) for name, (args, _, _) in CASE.items()}
    jobs.update({("debug", flag, name): lambda f, a=CASE[name][0], fl=flag: _cli(f, *a, env={fl: "1"})
                 for flag, name in DEBUG_CASES})
    jobs[("bug",)] = lambda f: _run(f, [sys.executable, str(root / "boom.py")])
    jobs[("bug", "user")] = lambda f: _run(f, [sys.executable, str(root / "boom.py")], env={"BOOM_USER": "1"})
    jobs[("multirun",)] = lambda f: _cli(f, "train", "--multirun", "dataset.root={tmp}/gone", "seed=1,2")
    jobs[("help",)] = lambda f: _run(f, [sys.executable, "-m", "medsynbench", "--help"])
    folders = {key: root / "-".join(key).replace(" ", "_") for key in jobs}
    with ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(job, folders[key]) for key, job in jobs.items()}
        return {key: (folders[key], future.result()) for key, future in futures.items()}


@pytest.mark.parametrize("name", list(CASE))
def test_user_error_prints_one_message_without_traceback(outcomes, name):
    args, once, also = CASE[name]
    folder, proc = outcomes[("case", name)]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.count(once) == 1, out
    assert once in proc.stderr and also in proc.stderr, out
    assert f"medsynbench {args[0]}: error: " in proc.stderr, out
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out, out
    assert "Error executing job" not in out, out  # Hydra's job-runner line: a single run's user error skips it


def test_data_error_is_still_recorded_as_a_failed_run(outcomes):
    folder, _ = outcomes[("case", "DataError")]
    (record,) = load_records(folder / "results" / "store")
    assert record["status"] == "failed" and "dataset root not found" in record["error"]
    # the relaunch keeps the record of the earlier failure and reports the error once (not also "failed before")
    again = _cli(folder, *CASE["DataError"][0])
    out = again.stdout + again.stderr
    assert again.returncode == 2 and out.count("dataset root not found") == 1 and "Traceback" not in out, out
    assert len(load_records(folder / "results" / "store")) == 1


@pytest.mark.parametrize("flag,name", DEBUG_CASES)
def test_debug_flag_shows_the_traceback(outcomes, flag, name):
    _, proc = outcomes[("debug", flag, name)]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and CASE[name][1] in proc.stderr, proc.stderr


def test_a_bug_keeps_its_traceback(outcomes):
    """An unexpected exception is not a user error: its traceback is printed (from the command's own frames, as
    Hydra's report did) and the exit status is 1; a user error raised by the same command is one message."""
    _, bug = outcomes[("bug",)]
    assert bug.returncode == 1, bug.stderr
    assert "Traceback (most recent call last)" in bug.stderr and "KeyError: 'a bug in a command'" in bug.stderr
    assert 'return {}["a bug in a command"]' in bug.stderr and "MEDSYNBENCH_DEBUG=1" in bug.stderr
    assert f"hydra{os.sep}_internal" not in bug.stderr, bug.stderr  # Hydra's frames above the command are dropped
    _, user = outcomes[("bug", "user")]
    assert user.returncode == 2 and "Traceback" not in user.stderr, user.stderr
    assert user.stderr.count("some/file.png: a user error") == 1, user.stderr


def test_multirun_records_a_jobs_user_error_and_goes_on(outcomes):
    """In a multirun a job's bad data is recorded as a failed run and the sweep goes on (exit 0), as before: the
    error is logged once per job, without a traceback."""
    folder, proc = outcomes[("multirun",)]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("dataset root not found") == 2 and "Traceback" not in out, out
    records = load_records(folder / "results" / "store")
    assert sorted(r["seed"] for r in records) == [1, 2] and {r["status"] for r in records} == {"failed"}


def test_help_names_the_debug_flag(outcomes):
    _, proc = outcomes[("help",)]
    assert proc.returncode == 0 and "MEDSYNBENCH_DEBUG=1" in proc.stdout, proc.stdout


# --- evaluate-folder takes train's runtime keys ----------------------------------------------------------------------
def test_evaluate_folder_takes_the_runtime_keys_of_train(tmp_path):
    """num_threads, progress and device are accepted (and validated), applied, recorded, and in no id: the same folder
    scored with other runtime settings replaces its record."""
    import numpy as np
    import torch
    from hydra.errors import ConfigCompositionException
    from PIL import Image

    from medsynbench.benchmark.evaluate_folder import evaluate_folder
    from medsynbench.benchmark.validate import validate_evaluate_folder_config
    from tests.conftest import compose_config

    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    before = torch.get_num_threads()
    records = []
    try:
        for threads, progress in ((1, False), (2, True)):
            cfg = compose_config([f"folder={folder}", "metrics=smoke", "data.image_size=16", "device=cpu",
                                  f"num_threads={threads}", f"progress={str(progress).lower()}",
                                  f"paths.results_dir={tmp_path / 'results'}"], config_name="evaluate_folder")
            validate_evaluate_folder_config(cfg)
            records.append(evaluate_folder(cfg))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    first, second = records
    assert first["config"]["num_threads"] == 1 and first["config"]["progress"] is False
    assert second["config"]["num_threads"] == 2 and second["config"]["progress"] is True
    assert (first["training_id"], first["evaluation_id"]) == (second["training_id"], second["evaluation_id"])
    assert len(load_records(tmp_path / "results" / "store")) == 1
    with pytest.raises(ConfigCompositionException, match="precision"):  # a training-only key stays refused
        compose_config([f"folder={folder}", "precision=bf16-mixed"], config_name="evaluate_folder")

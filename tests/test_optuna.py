"""Budgeted search: the Optuna sweeper (hydra_plugins/medsynbench_optuna_sweeper) over `medsynbench train`.

Tiny searches on the embedded data (smoke training, random-CNN metrics, no downstream), each study in a SQLite file
under tmp: values returned to Optuna are the stored records' metric values; a relaunch continues the study (total
budget, no retraining, an interrupted trial resumed under its own number); failed / diverged trials are FAIL; a
direction that contradicts the metric stops the search; two trials at a time through the joblib launcher.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from medsynbench.benchmark.objective import (ObjectiveDirectionError, TrialFailed, metric_direction,  # noqa: E402
                                 objective_value)

METRIC = "fd_random_cnn"
BASE = [o for o in SMOKE if not o.startswith("downstream=")] + [
    "downstream=none", "num_threads=1", "hydra/sweeper=medsynbench_optuna", f"objective.metric={METRIC}",
    "gan.diffaugment=choice(true,false)", "train.lr_g=tag(log,interval(1e-4,1e-3))"]


def _search(tmp: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    args = ["train", "--multirun", *BASE, f"paths.results_dir={tmp / 'results'}",
            f"hydra.sweeper.storage=sqlite:///{tmp / 'study.db'}", "hydra.sweeper.study_name=s", *extra]
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _study(tmp: Path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp / 'study.db'}")


def _records(tmp: Path) -> dict:
    records = [json.loads(p.read_text()) for p in (tmp / "results" / "store" / "records").glob("*.json")]
    return {r["training_id"]: r for r in records}


def _value(record: dict, metric: str = METRIC) -> float:
    return next(m["value"] for m in record["metrics"] if m["metric"] == metric)


# --- the objective, without training ------------------------------------------------------------------------------
def _record(status="completed", **extra):
    return {"run_id": "r", "status": status, "metrics": [{"metric": "kid_unet", "value": 0.5, "higher_is_better": False},
                                                         {"metric": "bad", "value": float("nan"),
                                                          "higher_is_better": False}],
            "downstream": [{"metric": "dice_unet", "train_on": "synthetic", "value": 0.7, "higher_is_better": True}],
            **extra}


def test_objective_value_and_failures():
    assert objective_value(_record(), "kid_unet") == 0.5
    assert objective_value(_record(), "kid_unet", "minimize") == 0.5
    assert objective_value(_record(), "dice_unet@synthetic", "maximize") == 0.7
    with pytest.raises(ObjectiveDirectionError, match="higher_is_better|must be minimized"):
        objective_value(_record(), "kid_unet", "maximize")
    with pytest.raises(TrialFailed, match="diverged"):
        objective_value(_record("diverged"), "kid_unet")
    with pytest.raises(TrialFailed, match="failed: boom"):
        objective_value(_record("failed", error="boom"), "kid_unet")
    with pytest.raises(TrialFailed, match="no metric 'fd_unet'.*kid_unet"):
        objective_value(_record(), "fd_unet")
    with pytest.raises(TrialFailed, match="not a finite"):
        objective_value(_record(), "bad")
    assert [metric_direction(m) for m in ("kid_unet", "fd_inf_unet", "r_fd_unet", "precision_k3_unet",
                                          "dice_unet@real", "fid_inception", "nonsense")] == \
        ["minimize", "minimize", "maximize", "maximize", "maximize", "minimize", None]


@pytest.mark.parametrize("gan", ["dcgan", "lsgan", "wgan", "wgan_gp", "hinge"])
def test_table1_optuna_configs_mirror_the_grid(gan):
    """Same keys and values as sweep/table1_<gan>.yaml, as Optuna choices; objective fd_unet; one-number budget."""
    import yaml

    grid = yaml.safe_load((REPO / "conf" / "sweep" / f"table1_{gan}.yaml").read_text())["hydra"]["sweeper"]["params"]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from medsynbench.benchmark.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=[f"+sweep=optuna_table1_{gan}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("BudgetedOptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
    assert isinstance(sweeper.n_trials, int) and cfg.objective.metric == "fd_unet" and sweeper.direction == "auto"
    assert set(sweeper.params) == set(grid)
    for key, values in grid.items():
        if key == "gan":
            assert sweeper.params[key] == values
        else:
            assert sweeper.params[key] == f"choice({values})", key
    assert str(sweeper.storage).startswith("sqlite:///") and sweeper.storage.endswith(f"{sweeper.study_name}.db")


# --- searches -----------------------------------------------------------------------------------------------------
def test_search_values_are_the_records_and_a_relaunch_continues(tmp_path):
    """(a) 3 trials, values = the records' metric values; (b) relaunch with a budget of 6 after injecting a trial
    left RUNNING by a dead sweeper: 6 trials in all, the interrupted one finished under its own number, the first 3
    not retrained; (c) a finished config launched again returns its objective without retraining."""
    first = _search(tmp_path, "hydra.sweeper.n_trials=3")
    assert "budget 3, 0 finished" in first.stdout
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    records = _records(tmp_path)
    assert len(records) == 3
    for t in study.trials:
        assert t.value == pytest.approx(_value(records[t.user_attrs["training_id"]]), abs=0, rel=1e-12)
    ids = [t.user_attrs["training_id"] for t in study.trials]
    ckpts = {p: p.stat().st_mtime_ns for i in ids for p in (tmp_path / "results" / "runs" / i).glob("checkpoints/*")}
    assert ckpts

    # a trial left RUNNING by a killed sweeper (its pid is gone): what a kill mid-trial leaves in the storage
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = study.ask({"gan.diffaugment": optuna.distributions.CategoricalDistribution([True, False]),
                       "train.lr_g": optuna.distributions.LogUniformDistribution(1e-4, 1e-3)})
    stale.set_user_attr("medsynbench_sweeper", f"{socket.gethostname()}:{dead.pid}")
    stale_params = dict(stale.params)

    second = _search(tmp_path, "hydra.sweeper.n_trials=6")
    assert "budget 6, 3 finished, 1 interrupted (resumed), 3 to run" in second.stdout
    study = _study(tmp_path)
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.trials[3].params == stale_params and study.trials[3].user_attrs.get("training_id")
    assert [t.user_attrs["training_id"] for t in study.trials[:3]] == ids
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts  # the first three were not retrained
    records = _records(tmp_path)
    for t in study.trials:
        assert t.value == pytest.approx(_value(records[t.user_attrs["training_id"]]), rel=1e-12)

    third = _search(tmp_path, "hydra.sweeper.n_trials=6")  # budget spent: nothing runs
    assert "6 finished, 0 interrupted (resumed), 0 to run" in third.stdout and "Launching" not in third.stderr

    # (c) the best trial's config as a single run: already recorded, its objective returned unchanged
    best = study.best_trial
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [o for o in BASE if "choice(" not in o and "interval(" not in o and "sweeper" not in o]
    args += [f"{k}={v}" for k, v in best.params.items()] + [f"paths.results_dir={tmp_path / 'results'}"]
    single = subprocess.run([sys.executable, "-m", "benchmark", "train", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    assert f"objective {METRIC} = {best.value!r}" in single.stdout
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts and len(_records(tmp_path)) == 6


def test_diverged_trial_is_failed_and_the_search_goes_on(tmp_path):
    """A run whose loss becomes non-finite (learning rate 1e30) is recorded diverged and told FAIL; the search runs
    its whole budget (max_failure_rate 1.0)."""
    _search(tmp_path, "hydra.sweeper.n_trials=2", "train.lr_g=choice(1e30,1e31)", "train.lr_d=1e30")
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert all("diverged" in t.user_attrs["error"] for t in study.trials)
    assert all(r["status"] == "diverged" for r in _records(tmp_path).values())


def test_contradicting_direction_stops_before_any_trial(tmp_path):
    proc = _search(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize", check=False)
    assert proc.returncode != 0
    assert "must be minimized" in proc.stderr and "hydra.sweeper.direction=maximize" in proc.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_two_trials_at_a_time_with_joblib(tmp_path):
    _search(tmp_path, "hydra.sweeper.n_trials=2", "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2",
            "hydra.launcher.n_jobs=2")
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    records = _records(tmp_path)
    assert {t.user_attrs["training_id"] for t in study.trials} == set(records)


def test_objective_is_in_no_run_id():
    from medsynbench.benchmark.run import evaluation_id, training_id
    from tests.conftest import compose_config

    meta = {"train_content_sha256": "a", "test_content_sha256": "b"}
    plain = compose_config(SMOKE)
    chosen = compose_config([*SMOKE, "objective.metric=kid_unet", "objective.direction=minimize"])
    assert training_id(plain, meta) == training_id(chosen, meta)
    assert evaluation_id(plain) == evaluation_id(chosen)

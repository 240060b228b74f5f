"""The console entry point: help texts, a 2 x 2 multirun producing four records and one leaderboard."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from medsynbench.benchmark.store import load_records
from tests.conftest import REPO, SMOKE


def _cli(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_texts():
    top = _cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "leaderboard" in top.stdout and "evaluate" in top.stdout
    train = _cli("train", "--help")
    assert train.returncode == 0, train.stderr
    for group in ("dataset", "gan", "train", "metrics", "downstream", "experiment", "hydra/launcher"):
        assert group in train.stdout
    assert "dcgan" in train.stdout and "isic_mini" in train.stdout
    assert "run_dir" in _cli("evaluate", "--help").stdout
    assert "group_by" in _cli("leaderboard", "--help").stdout
    bad = _cli("nonsense")
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_multirun_four_records_and_a_leaderboard(tmp_path):
    results = tmp_path / "results"
    run = _cli("train", "--multirun", *SMOKE, "gan=dcgan", "data.train_size=50,100", "seed=1,2",
               f"paths.results_dir={results}")
    assert run.returncode == 0, run.stderr[-3000:]
    records = load_records(results / "store")
    assert len(records) == 4
    assert {(r["train_size"], r["seed"]) for r in records} == {(50, 1), (50, 2), (100, 1), (100, 2)}
    assert all(r["status"] == "completed" for r in records)
    metric = next(m["metric"] for m in records[0]["metrics"] if m["metric"].startswith("fd_"))
    board = _cli("leaderboard", f"metric={metric}", "group_by=[gan.name,data.train_size]",
                 f"paths.results_dir={results}")
    assert board.returncode == 0, board.stderr
    assert f"`{metric}`" in board.stdout and " ± " in board.stdout
    (md,) = (results / "leaderboards").glob(f"{metric}-*.md")
    rows = pd.read_csv(md.with_suffix(".csv"))
    assert len(rows) == 2  # one row per train size, seeds averaged
    assert rows[f"{metric}_n_seeds"].tolist() == [2, 2]


def test_two_seeds_plus_a_reevaluation_and_another_image_size(tmp_path):
    """`train seed=0,1` + `evaluate` of seed 0 is still two seeds with the right mean; a run at another image size
    is a row of its own, never a third seed."""
    results = tmp_path / "results"
    smoke = [o for o in SMOKE if not o.startswith("data.image_size")]
    run = _cli("train", "--multirun", *smoke, "data.image_size=32", "data.train_size=16", "seed=0,1",
               f"paths.results_dir={results}")
    assert run.returncode == 0, run.stderr[-3000:]
    other = _cli("train", *smoke, "data.image_size=64", "data.train_size=16", "seed=0", f"paths.results_dir={results}")
    assert other.returncode == 0, other.stderr[-3000:]
    seed0 = next(r for r in load_records(results / "store")
                 if r["seed"] == 0 and r["config"]["data.image_size"] == 32)
    ev = _cli("evaluate", f"run_dir={seed0['run_dir']}", "device=cpu", f"paths.results_dir={results}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    records = load_records(results / "store")
    assert len(records) == 3  # the re-evaluation replaced seed 0's record
    fd = {(r["config"]["data.image_size"], r["seed"]): next(m["value"] for m in r["metrics"]
                                                           if m["metric"] == "fd_random_cnn") for r in records}
    board = _cli("leaderboard", "metric=[fd_random_cnn,kid_random_cnn]", f"paths.results_dir={results}")
    assert board.returncode == 0, board.stderr[-3000:]
    (csv,) = (results / "leaderboards").glob("fd_random_cnn*.csv")
    rows = pd.read_csv(csv).set_index("data.image_size")
    assert rows.loc[32, "fd_random_cnn_n_seeds"] == 2 and rows.loc[64, "fd_random_cnn_n_seeds"] == 1
    assert rows.loc[32, "fd_random_cnn_mean"] == pytest.approx((fd[32, 0] + fd[32, 1]) / 2, rel=1e-12)
    assert rows.loc[64, "fd_random_cnn_mean"] == pytest.approx(fd[64, 0], rel=1e-12)
    assert "kid_random_cnn_mean" in rows.columns


def test_evaluate_command_rebuilds_from_run_dir(tmp_path):
    results = tmp_path / "results"
    assert _cli("train", *SMOKE, "data.train_size=16", "evaluate=false", f"paths.results_dir={results}").returncode == 0
    assert load_records(results / "store")[0]["metrics"] == []
    (run_dir,) = (results / "runs").iterdir()
    ev = _cli("evaluate", f"run_dir={run_dir}", "device=cpu", f"paths.results_dir={results}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    records = load_records(results / "store")
    assert len(records) == 2 and records[1]["evaluated_from"].endswith("step_0000004.pt")
    assert records[1]["metrics"]


def test_evaluate_folder_scores_real_copies_better_than_noise(tmp_path):
    import numpy as np
    from PIL import Image

    from medsynbench.benchmark.evaluate_folder import evaluate_folder
    from tests.conftest import compose_config

    test_ids = (REPO / "data" / "isic2018_mini" / "split_test.txt").read_text().split()[:40]
    real_dir, noise_dir = tmp_path / "real_copies", tmp_path / "noise"
    real_dir.mkdir(), noise_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, image_id in enumerate(test_ids):
        src = next((REPO / "data" / "isic2018_mini" / "images").glob(f"{image_id}.*"))
        Image.open(src).save(real_dir / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise_dir / f"{i:03d}.png")
    fds = {}
    for folder in (real_dir, noise_dir):
        cfg = compose_config([f"folder={folder}", "metrics=smoke", "device=cpu", "data.image_size=32",
                              f"paths.results_dir={tmp_path / 'results'}"], config_name="evaluate_folder")
        record = evaluate_folder(cfg)
        assert record["gan"] == f"folder:{folder.name}" and record["n_synthetic"] == 40
        fds[folder.name] = next(m["value"] for m in record["metrics"] if m["metric"].startswith("fd_"))
    assert fds["real_copies"] < fds["noise"]
    assert len(load_records(tmp_path / "results" / "store")) == 2

"""Run identity at sweep scale: the data's content is part of a training, evaluation is apart from training, one
record per (training, evaluation), and parallel sweeps give the numbers of sequential ones."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynbench.benchmark.run import execute_run
from medsynbench.benchmark.store import load_records
from tests.conftest import REPO, compose_config

MINI = REPO / "data" / "isic2018_mini"


def _ckpt_state(run_dir: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in (Path(run_dir) / "checkpoints").glob("*.pt")}


def test_changed_bootstrap_on_a_completed_run_evaluates_only(smoke_cfg):
    first = execute_run(smoke_cfg("data.train_size=16", "metrics.options.bootstrap=0"))
    assert first["status"] == "completed" and first["evaluation_only"] is False
    before = _ckpt_state(first["run_dir"])
    log_lines = (Path(first["run_dir"]) / "train.log").read_text().count(" train_loop: step ")  # training steps logged

    second = execute_run(smoke_cfg("data.train_size=16", "metrics.options.bootstrap=5"))
    assert second["training_id"] == first["training_id"] and second["run_dir"] == first["run_dir"]
    assert second["evaluation_id"] != first["evaluation_id"]
    assert second["evaluation_only"] is True and second["timings"]["train_s"] == 0.0
    assert _ckpt_state(first["run_dir"]) == before  # no checkpoint written or touched: no training step ran
    assert (Path(first["run_dir"]) / "train.log").read_text().count(" train_loop: step ") == log_lines
    fd = next(m for m in second["metrics"] if m["metric"].startswith("fd_") and m.get("bootstrap"))
    assert fd["bootstrap"] == 5 and "ci_low" in fd
    # both evaluations are kept, each once; the same evaluation again changes nothing
    assert len(load_records(smoke_cfg().paths.store_dir)) == 2
    again = execute_run(smoke_cfg("data.train_size=16", "metrics.options.bootstrap=5"))
    assert again["recorded_at"] == second["recorded_at"]
    assert len(load_records(smoke_cfg().paths.store_dir)) == 2


def test_same_config_on_a_modified_copy_of_the_data_trains_anew(smoke_cfg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(MINI, copy)
    base = execute_run(smoke_cfg("data.train_size=16", "evaluate=false"))
    # an unmodified copy elsewhere is the same training: nothing to do
    moved = execute_run(smoke_cfg("data.train_size=16", "evaluate=false", f"dataset.root={copy}"))
    assert moved["training_id"] == base["training_id"] and moved["recorded_at"] == base["recorded_at"]
    # one training mask fixed (a few pixels flipped) under the same file name: a new training
    train_ids = (copy / "split_train.txt").read_text().split()
    mask_path = next((copy / "masks").glob(f"{train_ids[0]}*"))
    mask = np.array(Image.open(mask_path))
    mask[:4, :4] = 255 - mask[:4, :4]
    Image.fromarray(mask).save(mask_path)
    fixed = execute_run(smoke_cfg("data.train_size=null", "evaluate=false", f"dataset.root={copy}"))
    unfixed = execute_run(smoke_cfg("data.train_size=null", "evaluate=false"))
    assert fixed["training_id"] != unfixed["training_id"]
    assert fixed["evaluation_only"] is False and fixed["resumed_from"] is None
    assert fixed["data"]["train_content_sha256"] != unfixed["data"]["train_content_sha256"]
    assert fixed["data"]["test_content_sha256"] == unfixed["data"]["test_content_sha256"]


def test_feature_cache_follows_image_content_not_file_names(smoke_cfg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(MINI, copy)
    cfg = smoke_cfg("data.train_size=16", "downstream=none", f"dataset.root={copy}")
    first = execute_run(cfg)
    cache = Path(cfg.paths.cache_dir) / "features"
    n_before = len(list(cache.glob("*.npy")))
    # replace one test image with another image under the same name: new real features, not the cached ones
    test_ids = (copy / "split_test.txt").read_text().split()
    a, b = (next((copy / "images").glob(f"{i}.*")) for i in test_ids[:2])
    shutil.copyfile(b, a)
    second = execute_run(smoke_cfg("data.train_size=16", "downstream=none", f"dataset.root={copy}",
                                   "train.steps=6"))
    assert second["data"]["test_content_sha256"] != first["data"]["test_content_sha256"]
    assert second["data"]["test_ids_sha256"] == first["data"]["test_ids_sha256"]
    assert len(list(cache.glob("*.npy"))) == n_before + 1


def test_evaluating_an_intermediate_checkpoint_is_a_config_choice(smoke_cfg):
    last = execute_run(smoke_cfg("data.train_size=16", "downstream=none"))
    mid = execute_run(smoke_cfg("data.train_size=16", "downstream=none", "evaluate_step=2"))
    assert mid["training_id"] == last["training_id"] and mid["evaluated_step"] == 2 and last["evaluated_step"] == 4
    assert mid["evaluation_id"] != last["evaluation_id"] and mid["evaluation_only"] is True
    fd = {r["evaluated_step"]: next(m["value"] for m in r["metrics"] if m["metric"].startswith("fd_"))
          for r in (mid, last)}
    assert fd[2] != fd[4]
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 3"):
        execute_run(smoke_cfg("data.train_size=16", "downstream=none", "evaluate_step=3"))


def test_evaluate_command_replaces_its_own_record(smoke_cfg):
    from medsynbench.benchmark.reevaluate import evaluate_run_dir

    cfg = smoke_cfg("data.train_size=16", "downstream=none")
    record = execute_run(cfg)
    ecfg = compose_config([f"run_dir={record['run_dir']}", "device=cpu",
                           f"paths.results_dir={cfg.paths.results_dir}"], config_name="evaluate")
    again = evaluate_run_dir(ecfg)
    assert again["evaluation_id"] == record["evaluation_id"]  # same settings, same step: the same evaluation
    (stored,) = load_records(cfg.paths.store_dir)
    assert stored["recorded_at"] == again["recorded_at"]
    assert [m["value"] for m in stored["metrics"]] == [m["value"] for m in record["metrics"]]  # deterministic


def _sweep(results: Path, n_jobs: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "benchmark", "train", "--multirun", "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={n_jobs}", "num_threads=1", "seed=0,1", "train=smoke", "downstream=none",
            "data.image_size=32", "data.train_size=32", "gan.g_filters=16", "gan.d_filters=16", "device=cpu",
            "metrics.extractors.0.steps=20", "metrics.options.bootstrap=0", "metrics.image_metrics=[]",
            f"paths.results_dir={results}"]
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    records = load_records(results / "store")
    assert len(records) == 2 and all(r["status"] == "completed" for r in records)
    return {r["seed"]: {m["metric"]: m["value"] for m in r["metrics"]} for r in records}


@pytest.mark.slow
def test_parallel_sweep_gives_the_numbers_of_a_sequential_one(tmp_path):
    """The shared U-Net-encoder extractor is trained once (file lock), from a seeded init, and cached features are
    keyed by its actual weights: joblib with 2 workers = joblib with 1, per seed, to the last bit."""
    sequential = _sweep(tmp_path / "seq", n_jobs=1)
    parallel = _sweep(tmp_path / "par", n_jobs=2)
    assert sequential.keys() == parallel.keys() == {0, 1}
    assert "fd_unet" in sequential[0]
    for seed in (0, 1):
        assert parallel[seed] == sequential[seed], seed
    extractors = list((tmp_path / "par" / "cache" / "extractors").glob("unet_encoder-*.pt"))
    assert len(extractors) == 1
    meta = json.loads(extractors[0].with_suffix(".json").read_text())
    assert meta["steps"] == 20


def test_spade_records_real_training_masks_and_memorisation_grid_lands_in_the_run(smoke_cfg):
    """SPADE samples images for real training masks (as the empirical study did) and says so in the record and in the
    synthetic downstream rows; the memorisation closest-pairs grid is written into the run's evaluation folder."""
    record = execute_run(smoke_cfg("gan=spade", "gan.spade_hidden=16", "data.train_size=16",
                                   "metrics.image_metrics=[memorisation]", "downstream.train_on=[synthetic]"))
    assert record["status"] == "completed" and record["mask_source"] == "real_train_masks"
    rows = [d for d in record["downstream"] if not d.get("skipped")]
    assert rows and all(d["mask_source"] == "real_train_masks" for d in rows)
    grid = Path(record["artifacts"]["memorisation_grid"])
    assert grid.is_file() and grid.parent == Path(record["run_dir"]) / "evaluations" / record["evaluation_id"]
    assert all(m["grid"] == str(grid) for m in record["metrics"] if m.get("base_metric") == "memorisation")

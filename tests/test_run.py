"""The run orchestrator: compose -> train -> evaluate -> record; resume after a kill; divergence; failures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from medsynbench.benchmark.data import load_dataset
from medsynbench.benchmark.run import evaluation_id, execute_run, training_id
from medsynbench.benchmark.store import load_records
from medsynbench.benchmark.train_loop import StopRequested, batch_indices
from medsynbench.checkpoints import checkpoint_paths, load_checkpoint
from tests.conftest import REPO, SMOKE, compose_config


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(checkpoint_paths(run_dir)[-1])["state_dict"]


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_batch_order_is_a_pure_function_of_seed_and_step():
    first = [batch_indices(s, 5, 12, seed=3) for s in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, [batch_indices(s, 5, 12, seed=3) for s in range(6)]))
    # every epoch visits every image once
    flat = torch.cat(first)[:24]
    assert sorted(flat[:12].tolist()) == list(range(12)) and sorted(flat[12:24].tolist()) == list(range(12))
    assert not torch.equal(torch.cat(first), torch.cat([batch_indices(s, 5, 12, seed=4) for s in range(6)]))


def test_typo_in_config_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="trian_size"):
        compose_config([*SMOKE, "data.trian_size=5"])
    with pytest.raises(ConfigCompositionException, match="stepz"):
        compose_config([*SMOKE, "train.stepz=5"])


def test_run_end_to_end_writes_self_describing_run_dir(smoke_cfg):
    cfg = smoke_cfg("data.train_size=16")
    record = execute_run(cfg)
    run_dir = Path(record["run_dir"])
    assert record["status"] == "completed"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["step_0000002.pt", "step_0000004.pt"]
    assert (run_dir / "samples" / "step_0000004.png").is_file()
    assert OmegaConf.load(run_dir / "config.yaml").data.train_size == 16
    stored = load_records(cfg.paths.store_dir)
    assert len(stored) == 1 and stored[0]["run_id"] == record["run_id"]
    assert stored[0]["data"]["train_ids_sha256"] and stored[0]["train_size"] == 16
    assert any(m["metric"].startswith("fd_") for m in stored[0]["metrics"])
    assert all(m.get("extractor") for m in stored[0]["metrics"])
    assert {d["train_on"] for d in stored[0]["downstream"] if not d.get("skipped")} >= {"real", "synthetic"}
    # launching the same config again does not train or record twice
    again = execute_run(cfg)
    assert again["run_id"] == record["run_id"] and len(load_records(cfg.paths.store_dir)) == 1


def test_resume_after_stop_reproduces_uninterrupted_weights(smoke_cfg, tmp_path):
    common = ["train.steps=6", "evaluate=false", "data.train_size=16"]
    full = execute_run(smoke_cfg(*common, results=tmp_path / "a"))
    interrupted = smoke_cfg(*common, "train.stop_after=3", results=tmp_path / "b")
    with pytest.raises(StopRequested):
        execute_run(interrupted)
    # killed after step 3: the last checkpoint is step 2, and no record was written
    (run_dir,) = Path(interrupted.paths.runs_dir).iterdir()
    assert checkpoint_paths(run_dir)[-1].name == "step_0000002.pt"
    assert load_records(interrupted.paths.store_dir) == []
    resumed = execute_run(smoke_cfg(*common, results=tmp_path / "b"))
    assert resumed["resumed_from"] == 2 and resumed["run_id"] == full["run_id"]
    _assert_same_weights(_weights(Path(full["run_dir"])), _weights(Path(resumed["run_dir"])))


def test_resume_after_sigkill(tmp_path):
    """A real kill -9 in the middle of training, then the same command again."""
    args = [sys.executable, "-m", "benchmark", "train", *SMOKE, "train.steps=30", "train.checkpoint_every=3",
            "train.sample_every=100", "evaluate=false", "data.train_size=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([*args, f"paths.results_dir={tmp_path / 'ref'}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([*args, f"paths.results_dir={killed_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(killed_dir.glob("runs/*/checkpoints/step_0000009.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = list(killed_dir.glob("runs/*/checkpoints/step_*.pt"))
    assert ckpts and not list(killed_dir.glob("runs/*/checkpoints/step_0000030.pt")), "kill came too late"
    again = subprocess.run([*args, f"paths.results_dir={killed_dir}"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    (ref_run,) = (tmp_path / "ref" / "runs").iterdir()
    (killed_run,) = (killed_dir / "runs").iterdir()
    assert ref_run.name == killed_run.name
    _assert_same_weights(_weights(ref_run), _weights(killed_run))


def test_diverged_run_is_recorded_not_raised(smoke_cfg):
    cfg = smoke_cfg("train.lr_g=1e30", "train.lr_d=1e30", "train.steps=8", "data.train_size=16")
    record = execute_run(cfg)
    assert record["status"] == "diverged"
    (stored,) = load_records(cfg.paths.store_dir)
    assert stored["status"] == "diverged" and stored["metrics"] == []


def test_failed_run_is_recorded_then_raised(smoke_cfg):
    cfg = smoke_cfg("data.train_size=100000")
    with pytest.raises(Exception, match="100000"):
        execute_run(cfg)
    (stored,) = load_records(cfg.paths.store_dir)
    assert stored["status"] == "failed" and "100000" in stored["error"]
    assert execute_run(cfg, raise_on_failure=False)["status"] == "failed"


def test_fd_over_checkpoints_has_one_finite_row_per_snapshot(smoke_cfg):
    import math

    from medsynbench.benchmark.curves import fd_over_checkpoints

    record = execute_run(smoke_cfg("data.train_size=16", "evaluate=false"))
    rows = fd_over_checkpoints(record["run_dir"], n_samples=24, device="cpu")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["fd"]) and r["fd"] > 0 and r["extractor"] == "random_cnn" for r in rows)


def test_style_gan_run_records_perceptual_path_length(tmp_path):
    import torchvision

    state = {k: v for k, v in torchvision.models.vgg16(weights=None).state_dict().items() if k.startswith("features")}
    vgg = tmp_path / "random_vgg16_features.pth"
    torch.save(state, vgg)
    overrides = [o for o in SMOKE if "filters" not in o]  # StyleGAN2 has no DCGAN filter keys
    cfg = compose_config([*overrides, f"paths.results_dir={tmp_path / 'results'}", "gan=stylegan2",
                          "data.train_size=16", "downstream=none", "+metrics.generator_metrics=[ppl]",
                          f"+metrics.generator_options={{vgg_weights_path: '{vgg}', num_samples: 8, batch_size: 4}}"])
    record = execute_run(cfg)
    (ppl,) = [m for m in record["metrics"] if m["metric"].startswith("ppl")]
    assert ppl["metric"] == "ppl_lpips_vgg16" and ppl["value"] > 0 and ppl["higher_is_better"] is False
    assert ppl["weights"] == str(vgg)


def test_conditional_gan_feeds_labelled_synthetic_images_to_the_classifier(smoke_cfg):
    cfg = smoke_cfg("gan=cgan", "data.train_size=24", "downstream=efficientnet_cls", "downstream.steps=2",
                    "downstream.batch_size=4", "downstream.progress=false")
    record = execute_run(cfg)
    done = {(d["metric"], d["train_on"]) for d in record["downstream"] if not d.get("skipped")}
    assert {("acc_efficientnet", t) for t in ("real", "synthetic", "real+synthetic")} <= done
    synthetic = next(d for d in record["downstream"] if d["train_on"] == "synthetic" and d["metric"] == "acc_efficientnet")
    assert synthetic["n_train_synthetic"] == 24  # synthetic_n null: as many as the real training images


def _tid(overrides):
    cfg = compose_config([*SMOKE, *overrides])
    return training_id(cfg, load_dataset(cfg.dataset, cfg.data).meta)


def test_training_id_ignores_where_things_live_and_how_they_are_evaluated(tmp_path):
    import shutil

    copy = tmp_path / "moved_copy"
    shutil.copytree(REPO / "data" / "isic2018_mini", copy)
    base = _tid(["paths.results_dir=/a"])
    same = ["paths.results_dir=/b", f"dataset.root={copy}", "train.progress=true", "device=auto", "num_threads=1",
            "train.sample_every=1", "train.checkpoint_every=1", "metrics.options.bootstrap=7", "n_samples=12",
            "downstream=none", "experiment_name=other"]
    assert _tid(same) == base
    for changed in (["seed=1"], ["train.lr_g=1e-3"], ["data.intensity=minmax"], ["precision=bf16-mixed"],
                    ["gan.g_filters=8"], ["data.train_size=20"]):
        assert _tid(changed) != base, changed


def test_evaluation_id_covers_evaluation_settings_and_the_step():
    base = compose_config([*SMOKE])
    eid = evaluation_id(base)
    assert eid == evaluation_id(compose_config([*SMOKE, "seed=3", "train.lr_g=1e-3", "paths.results_dir=/x"]))
    for changed in (["metrics.options.bootstrap=7"], ["n_samples=12"], ["downstream=none"], ["evaluate_step=2"],
                    ["experiment_name=other"]):
        assert evaluation_id(compose_config([*SMOKE, *changed])) != eid, changed
    assert evaluation_id(base, step=2) == evaluation_id(compose_config([*SMOKE, "evaluate_step=2"]))
    assert evaluation_id(compose_config([*SMOKE, "evaluate=false"])) == "none"


def test_mixed_precision_is_a_config_switch(smoke_cfg):
    record = execute_run(smoke_cfg("precision=bf16-mixed", "data.train_size=16", "evaluate=false"))
    assert record["status"] == "completed" and record["config"]["precision"] == "bf16-mixed"
    with pytest.raises(ValueError, match="precision must be one of"):
        execute_run(smoke_cfg("precision=fp8", "data.train_size=16", "evaluate=false"))

"""Defaults that follow the data: the downstream task from dataset.task, conditional GANs need labels, sample counts
(metrics vs downstream, mix_ratio), config values checked before training, Dice once for binary masks, evaluation
progress and timings in train.log, Ctrl-C ending a run with a resumable checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medsynbench.benchmark.defaults import metric_sample_count, resolve_run_config
from medsynbench.benchmark.run import evaluation_id, execute_run, summary_lines
from medsynbench.benchmark.store import load_records
from medsynbench.benchmark.validate import ConfigError, validate_run_config
from medsynbench.checkpoints import checkpoint_paths, load_checkpoint
from medsynbench.downstream import run_downstream
from medsynbench.downstream.runner import planned_synthetic
from medsynbench.types import ImageSet
from tests.conftest import REPO, SMOKE, compose_config

NO_DOWNSTREAM_CHOICE = [o for o in SMOKE if not o.startswith("downstream=")]  # the default: downstream=auto
TINY_EFFICIENTNET = ["downstream.steps=2", "downstream.batch_size=4", "downstream.progress=false"]


def _compose_as_the_cli(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


# --- the downstream task follows dataset.task -----------------------------------------------------------------------
@pytest.mark.parametrize("dataset, option", [("isic_mini", "unet_seg"), ("kvasir", "unet_seg"),
                                             ("kermany", "efficientnet_cls"), ("pneumoniamnist", "efficientnet_cls")])
def test_default_downstream_is_the_option_that_fits_the_dataset_and_the_same_run(dataset, option):
    auto = compose_config([*NO_DOWNSTREAM_CHOICE, f"dataset={dataset}"])
    explicit = compose_config([*NO_DOWNSTREAM_CHOICE, f"dataset={dataset}", f"downstream={option}"])
    assert auto.downstream.task == "auto"
    assert resolve_run_config(auto).downstream == explicit.downstream
    assert evaluation_id(auto) == evaluation_id(explicit)  # auto and the explicit choice are one evaluation
    validate_run_config(auto)


def test_explicit_downstream_wins_and_shared_keys_apply_to_auto():
    explicit = compose_config([*NO_DOWNSTREAM_CHOICE, "downstream=efficientnet_cls"])  # isic_mini has labels too
    assert resolve_run_config(explicit).downstream.task == "classification"
    tuned = resolve_run_config(compose_config([*NO_DOWNSTREAM_CHOICE, "downstream.steps=7", "downstream.lr=0.01"]))
    assert (tuned.downstream.task, tuned.downstream.steps, tuned.downstream.lr) == ("segmentation", 7, 0.01)
    by_epochs = resolve_run_config(compose_config([*NO_DOWNSTREAM_CHOICE, "downstream.epochs=2"])).downstream
    assert (by_epochs.steps, by_epochs.epochs) == (None, 2)


def test_segmentation_downstream_on_a_classification_dataset_fails_before_training(tmp_path):
    overrides = [*SMOKE, "dataset=kermany", f"paths.results_dir={tmp_path}"]  # downstream=smoke: a U-Net
    with_choices = _compose_as_the_cli(overrides)  # Hydra's runtime record names the chosen option
    with pytest.raises(ConfigError, match=r"downstream=smoke .*does not fit dataset 'kermany'.*efficientnet_cls"):
        validate_run_config(with_choices)
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError, match="does not fit dataset 'kermany'"):
        execute_run(cfg)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()  # nothing loaded, nothing recorded


def test_classification_dataset_gets_the_classifier_end_to_end(smoke_cfg):
    """A classification dataset (here the embedded set with task=classification) runs EfficientNet by default, and
    every scenario is scored (a conditional GAN gives labelled synthetic images)."""
    cfg = smoke_cfg("dataset.task=classification", "gan=cgan", "data.train_size=24",
                    "downstream=auto", *TINY_EFFICIENTNET)
    record = execute_run(cfg)
    assert record["config"]["downstream.task"] == "classification"  # the record holds the resolved task
    assert record["config"]["downstream.model"] == "efficientnet_b0"
    scored = {(d["metric"], d["train_on"]) for d in record["downstream"] if not d.get("skipped")}
    assert {("acc_efficientnet", t) for t in ("real", "synthetic", "real+synthetic")} <= scored


def test_segmentation_downstream_without_masks_fails_when_the_data_is_loaded(smoke_cfg):
    cfg = smoke_cfg("dataset.masks_dir=null", "evaluate=true")  # downstream=smoke (U-Net), dataset.task segmentation
    with pytest.raises(ConfigError, match=r"segmentation needs masks, but dataset 'isic_mini' has none"):
        execute_run(cfg)
    assert not list(Path(cfg.paths.runs_dir).glob("*/checkpoints/*.pt"))  # no model was trained


# --- a conditional GAN needs labels ---------------------------------------------------------------------------------
def test_conditional_gan_on_unlabelled_data_fails_at_load_naming_dataset_and_fix(smoke_cfg):
    cfg = smoke_cfg("gan=cgan", "dataset.label_column=null", "dataset.class_names=[]", "data.train_size=16")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        execute_run(cfg)
    message = str(info.value)
    assert "gan=cgan" in message and "dataset 'isic_mini' has no class labels" in message
    assert "gan=dcgan" in message and "dataset.label_column" in message  # the two ways out
    assert not Path(cfg.paths.runs_dir).exists()  # before any run directory, model or step
    (stored,) = load_records(cfg.paths.store_dir)  # a multirun goes on: the failure is recorded (config-only id)
    assert stored["status"] == "failed" and "no class labels" in stored["error"] and "-nodata" in stored["run_id"]
    assert time.perf_counter() - t0 < 60


# --- config values checked before training ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-5"])
def test_non_positive_n_samples_is_refused_before_any_data(smoke_cfg, value):
    cfg = smoke_cfg(f"n_samples={value}")
    with pytest.raises(ConfigError, match=rf"n_samples={value}: must be a positive number"):
        execute_run(cfg)
    assert not Path(cfg.paths.results_dir).exists()


# --- sample counts ----------------------------------------------------------------------------------------------------
def test_metric_sample_count_rule():
    assert metric_sample_count(None, 80, [128])[0] == 129  # n > feature dim: full-rank synthetic covariance
    assert metric_sample_count(None, 500, [128, 32])[0] == 500  # the test split when it is larger
    assert metric_sample_count(None, 80, [])[0] == 80  # no feature extractor
    assert metric_sample_count(12, 80, [128]) == (12, "n_samples")  # an explicit count wins


def test_downstream_synthetic_sets_are_sized_by_the_downstream_settings():
    seg = {"task": "segmentation", "steps": 2}
    assert planned_synthetic(seg, 426) == {"real": 0, "synthetic": 426, "real+synthetic": 426}
    assert planned_synthetic({**seg, "mix_ratio": 0.5, "synthetic_n": 100}, 426) == {
        "real": 0, "synthetic": 100, "real+synthetic": 213}
    assert planned_synthetic({**seg, "mix_n": 7, "train_on": ["real+synthetic"]}, 426) == {"real+synthetic": 7}
    assert planned_synthetic({"task": "none"}, 426) == {}


def _pairs(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n, 32, 32, generator=g) > 0.6).long()
    return ImageSet(images=masks[:, None].float() * 1.6 - 0.8 + 0.1 * torch.randn(n, 1, 32, 32, generator=g),
                    masks=masks)


def test_binary_segmentation_reports_dice_once():
    tiny = {"task": "segmentation", "steps": 2, "batch_size": 4, "encoder_depth": 3,
            "decoder_channels": [16, 8, 4], "progress": False}
    records = run_downstream(tiny, _pairs(6, 0), _pairs(6, 1), _pairs(4, 2), num_mask_classes=2, num_classes=0,
                             seed=0, train_on=("real",))
    assert [r["metric"] for r in records] == ["dice_unet", "iou_unet"]  # binary: no per-class Dice / IoU


def test_mix_ratio_one_adds_one_synthetic_pair_per_real_image_and_counts_are_recorded(smoke_cfg):
    """16 real training pairs, 8 real test images: real+synthetic must train on 16 + 16 pairs and synthetic on 16
    (before: capped at the metric sample count, the test split's 8). The metric set is sized on its own:
    max(8 test images, 32 feature dims + 1) = 33, and its small-sample warning is in the summary."""
    record = execute_run(smoke_cfg("data.train_size=16", "data.test_size=8"))
    by = {d["train_on"]: d for d in record["downstream"]}
    assert (by["real+synthetic"]["n_train_real"], by["real+synthetic"]["n_train_synthetic"]) == (16, 16)
    assert (by["synthetic"]["n_train_real"], by["synthetic"]["n_train_synthetic"]) == (0, 16)
    assert {d["metric"] for d in record["downstream"]} == {"dice_unet", "iou_unet"}  # binary masks: Dice once
    counts = record["sample_counts"]
    assert counts["n_real_test"] == 8 and counts["n_real_train"] == 16 and counts["n_synthetic_metrics"] == 33
    assert counts["n_synthetic_downstream"] == {"synthetic": 16, "real+synthetic": 16}
    assert "feature dimension 32" in counts["n_synthetic_metrics_rule"]
    assert all(m["n_fake"] == 33 and m["n_real"] == 8 for m in record["metrics"])
    (stored,) = load_records(Path(record["run_dir"]).parents[1] / "store")
    assert stored["sample_counts"] == counts
    lines = summary_lines(record)
    assert "synthetic for metrics 33" in lines[1] and "real+synthetic 16" in lines[1] and "real test 8" in lines[1]
    assert any(line.startswith("[medsynbench] warning (fd_random_cnn") and "fewer samples (8)" in line
               for line in lines)
    # evaluation progress and the timing summary are in train.log
    log = (Path(record["run_dir"]) / "train.log").read_text()
    for text in ("evaluation: sampling 33 synthetic images for the metrics", "evaluation: random_cnn features",
                 "sampling 16 synthetic pairs for the downstream tasks", "downstream segmentation@real+synthetic: "
                 "training Unet/resnet18 on 16 real + 16 synthetic images"):
        assert text in log, text
    timings = next(line for line in log.splitlines() if " timings: " in line)
    for part in ("train ", "sample ", "features_synthetic_random_cnn ", "metric_kid_random_cnn ",
                 "metric_fd_random_cnn ", "downstream_segmentation@synthetic ", "total "):
        assert part in timings, part


# --- Ctrl-C ----------------------------------------------------------------------------------------------------------
def _weights(run_dir: Path) -> dict:
    return load_checkpoint(checkpoint_paths(run_dir)[-1])["state_dict"]


def test_ctrl_c_saves_a_resumable_checkpoint_with_a_one_line_message(tmp_path):
    args = [sys.executable, "-m", "medsynbench", "train", *SMOKE, "train.steps=100", "train.checkpoint_every=20",
            "train.sample_every=1000", "train.log_every=10", "evaluate=false", "data.train_size=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([*args, f"paths.results_dir={tmp_path / 'ref'}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    results = tmp_path / "interrupted"
    proc = subprocess.Popen([*args, f"paths.results_dir={results}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(results.glob("runs/*/checkpoints/step_0000020.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err
    lines = [line for line in (out + err).splitlines() if "interrupted at step" in line]
    assert len(lines) == 1 and lines[0].startswith("[medsynbench] interrupted at step ")
    assert "relaunch the same command to resume" in lines[0]
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    (run_dir,) = (results / "runs").iterdir()
    saved = run_dir / "checkpoints" / f"step_{step:07d}.pt"
    assert f"checkpoint saved to {saved}" in lines[0] and saved.is_file()
    assert 20 <= step < 100, "the interrupt came too late"
    again = subprocess.run([*args, f"paths.results_dir={results}"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from {saved} (step {step})" in again.stdout + again.stderr
    (ref_run,) = (tmp_path / "ref" / "runs").iterdir()
    assert ref_run.name == run_dir.name
    ref_w, w = _weights(ref_run), _weights(run_dir)
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)  # the same weights as an uninterrupted run
    # the off-cadence checkpoint of the interruption is gone once training passed the next regular one
    assert [p.name for p in checkpoint_paths(run_dir)] == [p.name for p in checkpoint_paths(ref_run)]


def test_auto_downstream_takes_augment_settings():
    """`downstream: auto` passes the real_augmented scenario's settings to the option it resolves to; a misspelt
    augment key is still refused before any data is read."""
    from medsynbench.benchmark.validate import ConfigError, validate_run_config
    from tests.conftest import compose_config

    cfg = compose_config(["dataset=isic_mini", "downstream.augment={degrees: 10}"])  # a key of auto: no "+"
    validate_run_config(cfg)
    resolved = resolve_run_config(cfg).downstream
    assert resolved.task == "segmentation" and resolved.augment.degrees == 10
    with pytest.raises(ConfigError, match="degreez"):
        validate_run_config(compose_config(["dataset=isic_mini", "+downstream.augment.degreez=10"]))

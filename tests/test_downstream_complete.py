"""Downstream utility, complete (issue 11): per-transform image-mask alignment, class balancing from a conditional
GAN's samples, chunked synthetic sets, validation + early stopping with best weights restored, bootstrap CIs, the
cache of the GAN-independent scenarios across a sweep, the task/dataset check and the feature-space maps."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from medsynbench.benchmark.evaluate import sample_imageset
from medsynbench.benchmark.validate import ConfigError, validate_run_config
from medsynbench.downstream import parse_settings, run_downstream
from medsynbench.downstream import bootstrap
from medsynbench.downstream.augment import Augmenter
from medsynbench.downstream.config import AugmentSettings
from medsynbench.downstream.runner import planned_balancing
from medsynbench.downstream.segmentation import dice_per_class
from medsynbench.downstream.synthetic import DiskArray, plan_labels, sample_chunked, validation_split
from medsynbench.downstream.training import fit
from tests.conftest import REPO, SMOKE, compose_config

OFF = dict(hflip=0.0, vflip=0.0, degrees=0.0, translate=0.0, scale=[1.0, 1.0], brightness=0.0, contrast=0.0,
           elastic_alpha=0.0)
# every transform of downstream.augment, alone and always applied
TRANSFORMS = {
    "hflip": dict(hflip=1.0), "vflip": dict(vflip=1.0), "rotation": dict(degrees=30.0),
    "translate": dict(translate=0.2), "scale": dict(scale=[0.7, 1.3]),
    "elastic": dict(elastic_alpha=40.0, elastic_sigma=4.0, elastic_p=1.0),
    "brightness": dict(brightness=0.5), "contrast": dict(contrast=0.5),
}
PHOTOMETRIC = {"brightness", "contrast"}
TINY_CLS = {"task": "classification", "steps": 2, "batch_size": 4, "progress": False, "ci_n_boot": 100}


def _blobs(n: int, size: int = 32, seed: int = 0, classes: int = 2):
    """Images whose pixels encode their (asymmetric, off-centre) rectangle mask."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(2, size // 3, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        masks[i, y:y + h, x:x + w + 3] = int(torch.randint(1, classes, (1,), generator=g))
    images = (masks.float() / max(classes - 1, 1) * 2 - 1)[:, None].repeat(1, 3, 1, 1)
    return images, masks


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_transform_keeps_image_mask_alignment(name):
    images, masks = _blobs(24, classes=3)
    out, out_masks = Augmenter(AugmentSettings(**{**OFF, **TRANSFORMS[name]}))(images, masks,
                                                                             torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out_masks.dtype == torch.long
    assert set(out_masks.unique().tolist()) <= {0, 1, 2}                     # still index masks
    if name in PHOTOMETRIC:
        assert torch.equal(out_masks, masks) and not torch.allclose(out, images)  # the image only
        return
    changed = sum(not torch.equal(out_masks[i], masks[i]) for i in range(len(masks)))
    assert changed >= 16, changed                                            # the transform did move the masks
    # the image (bilinear) went through the same geometry as its mask (nearest): the class read back from the
    # image's intensity agrees with the mask except along the edges
    recovered = ((out[:, 0] + 1) / 2 * 2).round().long()
    agree = (recovered == out_masks).float().mean(dim=(1, 2))
    assert float(agree.min()) > 0.9, (name, agree.min())
    # a mask paired with another image's transform would not agree: the check can fail
    other = (recovered == out_masks.roll(1, 0)).float().mean()
    assert float(other) < float(agree.mean()) - 0.05


def test_no_hand_written_flips_are_left_in_downstream():
    sources = {p.name: p.read_text() for p in (REPO / "downstream").glob("*.py")}
    assert not [n for n, s in sources.items() if re.search(r"\.flip\(|random_flips", s)]


# --- class balancing -------------------------------------------------------------------------------------------------
def _labelled(counts: list[int], size: int = 16, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)]).long()
    return ImageSet(torch.rand(len(labels), 3, size, size, generator=g) * 2 - 1, labels=labels)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_class_balancing_with_a_conditional_gans_samples(ratio, one_thread):
    from medsynbench.gans import DCGAN

    train, test = _labelled([20, 6, 2]), _labelled([4, 4, 4], seed=1)
    gan = DCGAN(name="cgan", image_size=16, image_channels=3, num_classes=3, conditional=True, g_filters=8,
                d_filters=8).eval()
    cfg = {**TINY_CLS, "balance_ratio": ratio, "train_on": ["real_balanced"]}
    plan = planned_balancing(cfg, train, 3, seed=0)
    target = int(np.ceil(ratio * 20))
    assert plan == {0: 0, 1: max(0, target - 6), 2: target - 2}
    bundle = DatasetBundle("toy", train, test)
    pool = sample_imageset(gan, sum(plan.values()), seed=5, bundle=bundle, batch_size=16, labels=plan_labels(plan))
    assert torch.bincount(pool.labels, minlength=3).tolist() == [plan[0], plan[1], plan[2]]
    recs = run_downstream(cfg, train, None, test, 0, 3, "cpu", seed=0, balance_synthetic=pool)
    rec = recs[0]
    assert not rec.get("skipped") and rec["train_on"] == "real_balanced"
    counts = rec["balance"]["class_counts_train"]
    assert rec["balance"]["class_counts_real"] == [20, 6, 2]
    assert counts == [20, max(6, target), target] and rec["n_train_synthetic"] == sum(plan.values())
    if ratio == 1.0:
        assert len(set(counts)) == 1                                         # balanced
    # frequency-following labels (the old sampling) leave the minority short: the warning path, recorded
    follow = sample_imageset(gan, sum(plan.values()), seed=5, bundle=bundle, batch_size=16)
    short = run_downstream(cfg, train, follow, test, 0, 3, "cpu", seed=0)[0]
    assert short["balance"]["short"] and short["balance"]["class_counts_train"][2] < target
    # an unconditional GAN's images carry no labels: skipped with the reason
    nolabel = ImageSet(pool.images, labels=None)
    skipped = run_downstream(cfg, train, None, test, 0, 3, "cpu", seed=0, balance_synthetic=nolabel)[0]
    assert skipped["skipped"] and "class-conditional" in skipped["reason"]


# --- chunked synthetic sets ------------------------------------------------------------------------------------------
def test_synthetic_sets_are_sampled_in_chunks_and_can_live_on_disk(one_thread):
    calls = []

    def sample(start, stop, k):
        calls.append((start, stop, k))
        g = torch.Generator().manual_seed(k)
        return ImageSet(torch.rand(stop - start, 3, 16, 16, generator=g) * 2 - 1,
                        masks=torch.randint(0, 2, (stop - start, 16, 16), generator=g))

    data, info = sample_chunked(sample, 10, chunk=4, ram_mb=0.01)          # 10 x 3 KB > 0.01 MB: on disk
    assert calls == [(0, 4, 0), (4, 8, 1), (8, 10, 2)] and info["n_chunks"] == 3 and info["n"] == 10
    assert info["storage"].startswith("disk") and isinstance(data.images, DiskArray) and len(data) == 10
    expected = torch.cat([sample(a, b, k).images for a, b, k in calls[:3]])
    assert torch.allclose(data.images[torch.arange(10)], expected, atol=2e-3)  # float16 on disk
    in_ram, info2 = sample_chunked(sample, 10, chunk=4, ram_mb=100)
    assert info2["storage"] == "memory" and torch.equal(in_ram.images, expected)
    # a disk-backed set trains like an in-memory one (rows read per batch); the count is recorded
    seg = {"task": "segmentation", "encoder_depth": 3, "decoder_channels": [16, 8, 4], "steps": 2, "batch_size": 4,
           "progress": False, "ci_n_boot": 50, "synthetic_n": 7}
    real, test = sample(0, 6, 9), sample(0, 5, 10)
    on_disk = run_downstream(seg, real, data, test, 2, 0, "cpu", seed=0, train_on=("synthetic", "real+synthetic"))
    in_mem = run_downstream(seg, real, in_ram, test, 2, 0, "cpu", seed=0, train_on=("synthetic", "real+synthetic"))
    assert [r["n_train_synthetic"] for r in on_disk if r["metric"] == "dice_unet"] == [7, 6]
    assert [r["value"] for r in on_disk] == pytest.approx([r["value"] for r in in_mem], abs=0.05)


# --- validation and early stopping -----------------------------------------------------------------------------------
def test_early_stopping_restores_the_best_weights():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 0).long()
    val = (x, 1 - y)       # validation labels opposite to training: val loss only rises while training improves
    s = parse_settings({"task": "classification", "lr": 0.05, "batch_size": 8, "progress": False,
                        "val_fraction": 0.1, "patience": 2, "val_every": 1})

    def model():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    loss = torch.nn.functional.cross_entropy
    stopped = model()
    info = fit(stopped, loss, x, y, s, 50, seed=3, device="cpu", dense_targets=False, val=val)
    assert info["stopped_early"] and info["best_step"] == 1 and info["steps_run"] == 3
    assert info["n_validations"] == 3
    one_step, three = model(), model()
    fit(one_step, loss, x, y, s, 1, seed=3, device="cpu", dense_targets=False)
    fit(three, loss, x, y, s, 3, seed=3, device="cpu", dense_targets=False)
    for a, b, c in zip(stopped.parameters(), one_step.parameters(), three.parameters()):
        assert torch.equal(a, b)                     # the best (step 1) weights were restored ...
        assert not torch.equal(a, c)                 # ... not the last ones


def test_validation_split_is_from_the_training_side_and_recorded(one_thread):
    train, test = _labelled([12, 12]), _labelled([5, 5], seed=1)
    fit_idx, val_idx = validation_split(24, 0.25, seed=0)
    assert len(val_idx) == 6 and not set(fit_idx.tolist()) & set(val_idx.tolist())
    cfg = {**TINY_CLS, "steps": 6, "val_fraction": 0.25, "patience": 1, "val_every": 2}
    recs = run_downstream(cfg, train, None, test, 0, 2, "cpu", seed=0, train_on=("real", "real_augmented"))
    for r in recs:
        assert r["n_train_real"] == 18 and r["n_test"] == 10                # 6 held out of 24, test untouched
        v = r["validation"]
        assert v["n_val"] == 6 and v["source"].startswith("real training split") and v["patience"] == 1
        assert 1 <= r["best_step"] <= r["steps_run"] <= 6 and r["epochs_run"] == pytest.approx(r["steps_run"] / 5,
                                                                                             abs=1e-3)
    with pytest.raises(ValueError, match="val_fraction"):
        parse_settings({**TINY_CLS, "patience": 3})


# --- bootstrap CIs ---------------------------------------------------------------------------------------------------
def _probs(n: int, seed: int, k: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p, labels


def test_bootstrap_cis_contain_the_estimate_shrink_with_more_images_and_are_seeded():
    small, large = _probs(40, 0), _probs(1000, 1)
    a = bootstrap.classification_scores(*small, n_boot=500, level=0.95, seed=0)
    b = bootstrap.classification_scores(*large, n_boot=500, level=0.95, seed=0)
    p, y = small
    assert a["auc"]["value"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))   # exact, as sklearn
    assert a["f1"]["value"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert a["acc"]["value"] == pytest.approx(float((p.argmax(1) == y).mean()))
    for key in ("acc", "bacc", "auc", "f1"):
        assert a[key]["ci_low"] <= a[key]["value"] <= a[key]["ci_high"]
        assert b[key]["ci_low"] <= b[key]["value"] <= b[key]["ci_high"]
        assert (b[key]["ci_high"] - b[key]["ci_low"]) < 0.5 * (a[key]["ci_high"] - a[key]["ci_low"]), key
        assert a[key]["ci_method"].startswith("percentile bootstrap") and a[key]["n_boot"] == 500
    again = bootstrap.classification_scores(*small, n_boot=500, level=0.95, seed=0)
    other = bootstrap.classification_scores(*small, n_boot=500, level=0.95, seed=1)
    assert again == a                                                        # seeded: the same CI
    assert any(other[k]["ci_low"] != a[k]["ci_low"] or other[k]["ci_high"] != a[k]["ci_high"] for k in a)
    # segmentation: Dice (matches torchmetrics) and IoU, per class and mean
    g = torch.Generator().manual_seed(0)
    for n in (12, 300):
        target = torch.randint(0, 3, (n, 8, 8), generator=g)
        pred = torch.where(torch.rand(n, 8, 8, generator=g) < 0.7, target, torch.randint(0, 3, (n, 8, 8), generator=g))
        for agg in ("samplewise", "global"):
            seg = bootstrap.segmentation_scores(pred.numpy(), target.numpy(), 3, agg, n_boot=300, level=0.95, seed=0)
            ref = dice_per_class(pred, target, 3, agg)
            assert [seg["dice_class1"]["value"], seg["dice_class2"]["value"]] == pytest.approx(ref.tolist(), abs=1e-6)
            assert seg["iou"]["value"] < seg["dice"]["value"]
            for rec in seg.values():
                assert rec["ci_low"] <= rec["value"] <= rec["ci_high"]
        if n == 12:
            small_width = seg["dice"]["ci_high"] - seg["dice"]["ci_low"]
    assert seg["dice"]["ci_high"] - seg["dice"]["ci_low"] < 0.5 * small_width


def test_every_downstream_record_carries_its_ci(one_thread):
    train, test = _labelled([8, 8]), _labelled([6, 6], seed=1)
    recs = run_downstream(TINY_CLS, train, None, test, 0, 2, "cpu", seed=0, train_on=("real",))
    assert {r["metric"] for r in recs} == {"acc_efficientnet", "bacc_efficientnet", "auc_efficientnet",
                                           "f1_efficientnet"}
    for r in recs:
        assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["ci_level"] == 0.95 and r["ci_seed"] == 0
        assert r["ci_n_units"] == 12


# --- config: the task follows the dataset ----------------------------------------------------------------------------
def test_segmentation_task_on_a_classification_dataset_is_a_config_error():
    cfg = compose_config([*SMOKE, "dataset=breastmnist", "downstream=unet_seg"])
    with pytest.raises(ConfigError, match=r"segmentation.*does not fit dataset 'breastmnist' "
                                          r"\(dataset.task=classification\).*downstream=efficientnet_cls"):
        validate_run_config(cfg)


# --- cache across a sweep + maps -------------------------------------------------------------------------------------
def test_real_scenarios_are_cached_across_the_gans_of_a_sweep_and_maps_are_written(smoke_cfg, tmp_path):
    from medsynbench.benchmark.run import execute_run

    results = tmp_path / "results"
    common = ["data.train_size=16", "downstream.train_on=[real,real_augmented,synthetic]",
              "+downstream.maps={enabled: true, max_points: 40}"]
    first = execute_run(smoke_cfg("gan=dcgan", *common, results=results))
    second = execute_run(smoke_cfg("gan=lsgan", *common, results=results))
    assert first["status"] == second["status"] == "completed"
    by1 = {(d["metric"], d["train_on"]): d for d in first["downstream"]}
    by2 = {(d["metric"], d["train_on"]): d for d in second["downstream"]}
    for scenario in ("real", "real_augmented"):
        a, b = by1["dice_unet", scenario], by2["dice_unet", scenario]
        assert not a.get("cache_hit") and b["cache_hit"] is True              # computed once, reused by the 2nd GAN
        assert a["value"] == b["value"] and a["ci_low"] == b["ci_low"] and a["cache_key"] == b["cache_key"]
    assert not by2["dice_unet", "synthetic"].get("cache_hit")                # GAN-dependent: always trained
    # the maps: a PNG per space and the 2-D coordinates, reproducible
    for rec in (first, second):
        arts = rec["artifacts"]
        assert {"map_extractor_random_cnn", "map_segmentation_encoder", "map_coordinates"} <= set(arts)
        assert all(Path(arts[k]).is_file() for k in arts if k.startswith("map_"))
    import pandas as pd
    coords = pd.read_csv(second["artifacts"]["map_coordinates"])
    assert set(coords["method"]) == {"umap", "tsne"} and set(coords["source"]) == {"real", "synthetic"}
    assert set(coords["space"]) == {"extractor_random_cnn", "segmentation_encoder"}
    assert coords.groupby(["space", "method", "source"]).size().max() <= 40
    from medsynbench.benchmark.maps import map_space
    feats = np.random.default_rng(0).normal(size=(30, 8))
    m1 = map_space(feats[:15], feats[15:], ["umap", "tsne"], 0, 40, "x")
    m2 = map_space(feats[:15], feats[15:], ["umap", "tsne"], 0, 40, "x")
    assert np.allclose(m1[["x", "y"]].to_numpy(), m2[["x", "y"]].to_numpy())  # seeded: the same layout

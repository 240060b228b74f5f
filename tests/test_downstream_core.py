"""Downstream tasks on tiny tensors: Dice against hand-computed values, record flow, skip rule, determinism, configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.data.types import ImageSet
from medsynbench.downstream import list_tasks, parse_settings, run_downstream
from medsynbench.downstream.classification import classification_scores
from medsynbench.downstream.segmentation import dice_per_class
from medsynbench.downstream.augment import FLIPS_ONLY, Augmenter
from medsynbench.downstream.training import batch_stream

CONF = Path(__file__).resolve().parents[1] / "conf" / "downstream"
TINY_SEG = {"task": "segmentation", "encoder_depth": 3, "decoder_channels": [16, 8, 4], "steps": 3, "batch_size": 4,
            "progress": False}
TINY_CLS = {"task": "classification", "steps": 2, "batch_size": 4, "progress": False}
REQUIRED = {"metric", "value", "higher_is_better", "train_on", "n_train_real", "n_train_synthetic", "n_test", "model",
            "weights", "steps", "epochs", "seed", "seconds"}


def _set(n, seed, size=32, k=3, c=3, masks=True, labels=True, num_classes=2):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.rand(n, c, size, size, generator=g) * 2 - 1,
                    masks=torch.randint(0, k, (n, size, size), generator=g) if masks else None,
                    labels=torch.randint(0, num_classes, (n,), generator=g) if labels else None)


def test_dice_against_hand_computed_values():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    pred = torch.zeros(2, 4, 4, dtype=torch.long)
    # image 0: class 1 target = 4 px, prediction = 2 of them + 2 others -> Dice 2*2/(4+4) = 0.5
    target[0, 0, :4] = 1
    pred[0, 0, :2] = 1
    pred[0, 1, :2] = 1
    # class 2: target 2 px, predicted exactly -> 1.0 ; image 1: class 2 target 4 px, prediction 2 of them -> 2*2/6
    target[0, 3, :2] = 2
    pred[0, 3, :2] = 2
    target[1, 2, :] = 2
    pred[1, 2, :2] = 2
    # image 1 has no class 1 in target or prediction: excluded from class 1 (0/0), so class 1 = 0.5
    per_class = dice_per_class(pred, target, 3, "samplewise")
    assert per_class.tolist() == pytest.approx([0.5, (1.0 + 4 / 6) / 2])
    # global: class 1 = 2*2/(4+4); class 2 = 2*(2+2)/((2+4)+(2+2)) = 0.8
    assert dice_per_class(pred, target, 3, "global").tolist() == pytest.approx([0.5, 0.8])
    # a false positive on an image without the class counts as 0
    pred[1, 0, 0] = 1
    assert float(dice_per_class(pred, target, 3)[0]) == pytest.approx(0.25)


def test_classification_scores_against_hand_computed_values():
    labels = torch.tensor([0, 0, 0, 1])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    scores = classification_scores(probs, labels, 2)
    assert scores["acc"] == pytest.approx(3 / 4)
    assert scores["bacc"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["auc"] == pytest.approx(1.0)  # the positive outranks every negative


def test_batches_cover_each_epoch_and_flips_move_masks_with_images():
    stream = batch_stream(10, 4, torch.Generator().manual_seed(0))
    first = torch.cat([next(stream) for _ in range(5)])
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:20].tolist()) == list(range(10))
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(8, 1, 1, 1) / 31 * 2 - 1
    masks = torch.arange(2 * 16).reshape(2, 4, 4).repeat(8, 1, 1)
    flipped, fmasks = Augmenter(FLIPS_ONLY)(images, masks, torch.Generator().manual_seed(1))  # torchvision v2 flips
    assert torch.equal(((flipped[:, 0] + 1) / 2 * 31).round().long(), fmasks)
    assert not torch.equal(flipped, images)


def test_segmentation_records_and_mixing():
    cfg = {**TINY_SEG, "mix_ratio": 0.5, "synthetic_n": 5}
    recs = run_downstream(cfg, _set(8, 0), _set(12, 1), _set(6, 2), num_mask_classes=3, num_classes=2,
                          device="cpu", seed=0)
    by = {(r["metric"], r["train_on"]): r for r in recs}
    assert set(by) == {(m, t) for m in ("dice_unet", "dice_unet_class1", "dice_unet_class2", "iou_unet",
                                        "iou_unet_class1", "iou_unet_class2")
                       for t in ("real", "synthetic", "real+synthetic")}
    for r in recs:
        assert REQUIRED <= set(r) and not r.get("skipped")
        assert 0.0 <= r["value"] <= 1.0 and r["n_test"] == 6 and r["weights"] == "random-init"
        assert r["model"] == "Unet/resnet18" and r["steps"] == 3
    assert (by["dice_unet", "real"]["n_train_real"], by["dice_unet", "real"]["n_train_synthetic"]) == (8, 0)
    assert (by["dice_unet", "synthetic"]["n_train_real"], by["dice_unet", "synthetic"]["n_train_synthetic"]) == (0, 5)
    assert by["dice_unet", "real+synthetic"]["n_train_synthetic"] == 4  # 0.5 per real image
    mean = by["dice_unet", "real"]["value"]
    assert mean == pytest.approx((by["dice_unet_class1", "real"]["value"] + by["dice_unet_class2", "real"]["value"]) / 2)


def test_classification_records_and_train_on_subset():
    recs = run_downstream({**TINY_CLS, "model": "efficientnet_b0"}, _set(8, 0, c=1, num_classes=3),
                          _set(8, 1, c=1, num_classes=3), _set(6, 2, c=1, num_classes=3),
                          num_mask_classes=0, num_classes=3, device="cpu", seed=0, train_on=("synthetic",))
    assert [r["metric"] for r in recs] == ["acc_efficientnet", "bacc_efficientnet", "auc_efficientnet", "f1_efficientnet"]
    assert all(r["train_on"] == "synthetic" and r["model"] == "efficientnet_b0" and 0 <= r["value"] <= 1 for r in recs)


def test_skip_rule_without_synthetic_targets():
    seg = run_downstream(TINY_SEG, _set(6, 0), _set(6, 1, masks=False), _set(4, 2), 3, 2, "cpu", 0)
    assert [(r["train_on"], bool(r.get("skipped"))) for r in seg][:1] == [("real", False)]
    skipped = [r for r in seg if r.get("skipped")]
    assert {r["train_on"] for r in skipped} == {"synthetic", "real+synthetic"}
    assert all("masks" in r["reason"] and r["value"] is None for r in skipped)
    cls = run_downstream(TINY_CLS, _set(6, 0), _set(6, 1, labels=False), _set(4, 2), 3, 2, "cpu", 0,
                         train_on=("synthetic", "real+synthetic"))
    assert len(cls) == 2 and all(r["skipped"] and "labels" in r["reason"] for r in cls)
    no_gan = run_downstream(TINY_CLS, _set(6, 0), None, _set(4, 2), 3, 2, "cpu", 0, train_on=("synthetic",))
    assert no_gan[0]["skipped"] and "no synthetic" in no_gan[0]["reason"]
    # a dataset without masks: segmentation is skipped for every condition instead of crashing the run
    nomask = run_downstream(TINY_SEG, _set(6, 0, masks=False), None, _set(4, 2, masks=False), 0, 2, "cpu", 0)
    assert len(nomask) == 3 and all(r["skipped"] for r in nomask)


def test_fixed_seed_is_deterministic_and_seed_matters():
    args = (_set(8, 0), _set(8, 1), _set(6, 2), 3, 2, "cpu")
    cfg = {**TINY_SEG, "steps": 4}
    torch.manual_seed(123)
    a = run_downstream(cfg, *args, seed=5, train_on=("real",))
    outside = torch.rand(1)
    torch.manual_seed(123)
    b = run_downstream(cfg, *args, seed=5, train_on=("real",))
    assert torch.equal(outside, torch.rand(1))  # the caller's global RNG is untouched
    c = run_downstream(cfg, *args, seed=6, train_on=("real",))
    key = lambda recs: [(r["metric"], r["value"], r["final_train_loss"]) for r in recs]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_configs_parse_and_validate():
    assert list_tasks() == ["classification", "none", "segmentation"]
    seg = parse_settings(OmegaConf.load(CONF / "unet_seg.yaml"))
    assert seg.task == "segmentation" and seg.encoder_weights is None and seg.encoder == "resnet18"
    cls = parse_settings(OmegaConf.load(CONF / "efficientnet_cls.yaml"))
    assert cls.task == "classification" and cls.pretrained is False and cls.model.startswith("efficientnet")
    assert run_downstream(OmegaConf.load(CONF / "none.yaml"), _set(4, 0), None, _set(4, 1), 3, 2, "cpu", 0) == []
    smoke = OmegaConf.merge(OmegaConf.load(CONF / "unet_seg.yaml"),
                            {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF / "smoke.yaml")).items()
                             if k != "defaults"})
    recs = run_downstream(smoke, _set(6, 0, k=2), _set(6, 1, k=2), _set(4, 2, k=2), 2, 0, "cpu", 0)
    assert {r["train_on"] for r in recs if not r.get("skipped")} == {"real", "synthetic", "real+synthetic"}
    with pytest.raises(ValueError, match="encoder_wieghts"):
        parse_settings({"task": "segmentation", "encoder_wieghts": None})
    with pytest.raises(ValueError, match="not a known task"):
        parse_settings({"task": "detection"})
    with pytest.raises(ValueError, match="exactly one of steps / epochs"):
        parse_settings({"task": "segmentation", "epochs": 2})


def test_epochs_setting_converts_to_steps():
    recs = run_downstream({**TINY_SEG, "steps": None, "epochs": 2}, _set(10, 0), None, _set(4, 1), 3, 2, "cpu", 0,
                          train_on=("real",))
    assert recs[0]["steps"] == 2 * 3 and recs[0]["epochs"] == 2  # ceil(10 / 4) = 3 batches per epoch


def test_mismatched_synthetic_shapes_and_classes_fail_clearly():
    with pytest.raises(ValueError, match="differ from real"):
        run_downstream(TINY_SEG, _set(4, 0), _set(4, 1, size=16), _set(4, 2), 3, 2, "cpu", 0)
    with pytest.raises(ValueError, match="3 classes"):
        run_downstream(TINY_SEG, _set(4, 0), _set(4, 1, k=5), _set(4, 2), 3, 2, "cpu", 0)

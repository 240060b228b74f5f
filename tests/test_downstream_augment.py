"""The real_augmented downstream scenario: joint image-mask augmentation (torchvision.transforms.v2), seeded, and its
records on the real test split."""
from __future__ import annotations

import pytest
import torch

from medsynbench.benchmark.data import load_dataset
from medsynbench.benchmark.validate import ConfigError, validate_run_config
from medsynbench.downstream import parse_settings, run_downstream
from medsynbench.downstream.augment import Augmenter
from medsynbench.downstream.config import AugmentSettings, DEFAULT_TRAIN_ON, TRAIN_ON
from tests.conftest import SMOKE, compose_config

TINY_SEG = {"task": "segmentation", "encoder_depth": 3, "decoder_channels": [16, 8, 4], "steps": 6, "batch_size": 8,
            "progress": False}


def _blobs(n: int, size: int = 32, seed: int = 0, classes: int = 2):
    """Images whose pixels encode their mask (large rectangles, so that resampling edges are a small fraction)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(2, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        masks[i, y:y + h, x:x + w] = int(torch.randint(1, classes, (1,), generator=g))
    images = (masks.float() / max(classes - 1, 1) * 2 - 1)[:, None].repeat(1, 3, 1, 1)
    return images, masks


def test_masks_stay_index_masks_and_move_with_their_image():
    images, masks = _blobs(32)
    geometric = AugmentSettings(brightness=0.0, contrast=0.0, degrees=20.0, translate=0.1, scale=[0.8, 1.2])
    out, out_masks = Augmenter(geometric)(images, masks, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out_masks.shape == masks.shape and out_masks.dtype == masks.dtype
    assert set(out_masks.unique().tolist()) <= {0, 1}                 # nearest interpolation: still binary
    assert out.min() >= -1 and out.max() <= 1
    changed = [i for i in range(len(images)) if not torch.equal(out_masks[i], masks[i])]
    assert len(changed) >= 28                                          # per-image draws, not one for the batch
    # the image (bilinear) and the mask (nearest) went through the same geometry: they agree except at edges
    agree = ((out[:, 0] > 0).long() == out_masks).float().mean(dim=(1, 2))
    assert float(agree.min()) > 0.93, agree.min()
    # a mask moved against its own image would not: the check can fail
    assert float(((out[:, 0] > 0).long() == out_masks.roll(1, 0)).float().mean()) < 0.9


def test_multiclass_masks_keep_their_labels_and_photometric_changes_touch_the_image_only():
    images, masks = _blobs(16, classes=4)
    settings = AugmentSettings(hflip=0.0, vflip=0.0, degrees=0.0, translate=0.0, scale=[1.0, 1.0],
                               brightness=0.4, contrast=0.4)
    out, out_masks = Augmenter(settings)(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out_masks, masks)                             # no geometry: masks untouched
    assert not torch.allclose(out, images)                           # but the intensities moved
    geometric = Augmenter(AugmentSettings(brightness=0.0, contrast=0.0))(images, masks, torch.Generator().manual_seed(0))
    assert set(geometric[1].unique().tolist()) <= set(masks.unique().tolist())


def test_same_seed_same_augmentation_and_the_global_rng_is_untouched():
    images, masks = _blobs(8)
    state = torch.get_rng_state()
    a = Augmenter()(images, masks, torch.Generator().manual_seed(7))
    b = Augmenter()(images, masks, torch.Generator().manual_seed(7))
    c = Augmenter()(images, masks, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    labels_only, none = Augmenter()(images, None, torch.Generator().manual_seed(7))  # classification: image only
    assert none is None and labels_only.shape == images.shape


def test_settings_are_checked_and_the_default_scenarios_are_unchanged():
    assert "real_augmented" in TRAIN_ON and "real_augmented" not in DEFAULT_TRAIN_ON
    s = parse_settings({**TINY_SEG, "augment": {"degrees": 5, "brightness": 0}})
    assert s.augment.degrees == 5 and s.augment.brightness == 0 and s.augment.contrast == 0.1
    with pytest.raises(ValueError, match=r"downstream.augment .*'degres'"):
        parse_settings({**TINY_SEG, "augment": {"degres": 5}})
    with pytest.raises(ValueError, match=r"downstream.augment.hflip=1.5"):
        parse_settings({**TINY_SEG, "augment": {"hflip": 1.5}})
    cfg = compose_config([*SMOKE, "downstream.train_on=[real,real_augmented]", "+downstream.augment.degrees=5"])
    validate_run_config(cfg)
    bad = compose_config([*SMOKE, "+downstream.augment.degres=5"])
    with pytest.raises(ConfigError, match="degres"):
        validate_run_config(bad)


@pytest.fixture(scope="module")
def isic_mini():
    """The embedded real ISIC-2018 subset (160 train / 80 test image-mask pairs) at 32 px."""
    cfg = compose_config([*SMOKE])
    return load_dataset(cfg.dataset, cfg.data)


def test_real_augmented_scenario_is_scored_on_the_real_test_split(isic_mini, one_thread):
    train, test = isic_mini.train, isic_mini.test
    recs = run_downstream(TINY_SEG, train, None, test, num_mask_classes=2, num_classes=3, device="cpu", seed=0,
                          train_on=("real", "real_augmented"))
    by = {(r["metric"], r["train_on"]): r for r in recs}
    aug, real = by[("dice_unet", "real_augmented")], by[("dice_unet", "real")]
    assert aug["n_test"] == len(test) == 80 and aug["n_train_real"] == len(train) == 160
    assert aug["n_train_synthetic"] == 0 and aug["steps"] == TINY_SEG["steps"] and not aug.get("skipped")
    assert 0.0 <= aug["value"] <= 1.0
    assert aug["augment"] == {"hflip": 0.5, "vflip": 0.5, "degrees": 15.0, "translate": 0.05, "scale": [0.9, 1.1],
                              "brightness": 0.1, "contrast": 0.1, "elastic_alpha": 0.0, "elastic_sigma": 5.0,
                              "elastic_p": 0.5}
    assert "augment" not in real
    # the same initialisation and batches, other inputs: the augmented model is a different model
    assert aug["final_train_loss"] != real["final_train_loss"]
    again = run_downstream(TINY_SEG, train, None, test, num_mask_classes=2, num_classes=3, device="cpu", seed=0,
                           train_on=("real_augmented",))
    assert again[0]["value"] == aug["value"] and again[0]["final_train_loss"] == aug["final_train_loss"]
    # the default conditions stay real / synthetic / real+synthetic
    default = run_downstream({**TINY_SEG, "steps": 1}, train, None, test, 2, 3, "cpu", seed=0)
    assert {r["train_on"] for r in default} == set(DEFAULT_TRAIN_ON)


def test_real_augmented_classification_uses_labels(isic_mini, one_thread):
    cfg = {"task": "classification", "model": "efficientnet_b0", "steps": 2, "batch_size": 4, "progress": False}
    recs = run_downstream(cfg, isic_mini.train, None, isic_mini.test, num_mask_classes=2, num_classes=3,
                          device="cpu", seed=0, train_on=("real_augmented",))
    assert {r["metric"] for r in recs} == {"acc_efficientnet", "bacc_efficientnet", "auc_efficientnet", "f1_efficientnet"}
    assert all(r["train_on"] == "real_augmented" and r["n_test"] == 80 for r in recs)

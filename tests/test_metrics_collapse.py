"""Collapse detection on a truly collapsed generator (one point / one image) vs a healthy one (real distribution)."""
import numpy as np
import torch

from medsynbench.metrics import compute_feature_metrics, compute_image_metrics
from medsynbench.metrics.collapse import detect_collapse


def _features(seed=0, n=80, d=16):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d))


def test_generator_emitting_one_point_is_collapsed():
    real, healthy = _features()
    one_point = np.repeat(real[:1] + 0.01, len(real), axis=0)  # every sample the same point
    ext = {"name": "unet_encoder", "weights": "x"}
    bad = detect_collapse(compute_feature_metrics(real, one_point, names=["prdc"], extractor=ext))
    good = detect_collapse(compute_feature_metrics(real, healthy, names=["prdc"], extractor=ext))
    assert bad["collapsed"] and any(r.startswith("mode_collapse") for r in bad["reasons"])
    assert not good["collapsed"] and good["reasons"] == []
    assert "mode_collapse[unet_encoder]" in good["checked"]
    # far-away garbage: nothing overlaps at all
    garbage = detect_collapse(compute_feature_metrics(real, healthy + 100, names=["prdc"], extractor=ext))
    assert garbage["collapsed"] and any(r.startswith("no_overlap") for r in garbage["reasons"])


def test_identical_images_are_collapsed_by_diversity():
    g = torch.Generator().manual_seed(0)
    real = torch.rand((16, 1, 32, 32), generator=g) * 2 - 1
    healthy = torch.rand((16, 1, 32, 32), generator=g) * 2 - 1
    same = real[:1].repeat(16, 1, 1, 1)
    bad = detect_collapse(compute_image_metrics(real, same, names=["msssim"], msssim_pairs=20))
    good = detect_collapse(compute_image_metrics(real, healthy, names=["msssim"], msssim_pairs=20))
    assert bad["collapsed"] and bad["reasons"][0].startswith("low_diversity")
    assert not good["collapsed"] and good["checked"] == ["low_diversity"]


def test_thresholds_are_configurable_and_missing_records_flag_nothing():
    recs = [{"metric": "precision_k3_unet", "base_metric": "precision", "value": 0.5, "extractor": "unet"},
            {"metric": "recall_k3_unet", "base_metric": "recall", "value": 0.04, "extractor": "unet"},
            {"metric": "coverage_k3_unet", "base_metric": "coverage", "value": 0.2, "extractor": "unet"}]
    assert not detect_collapse(recs)["collapsed"]
    strict = detect_collapse(recs, recall_max=0.05, coverage_max=0.25)
    assert strict["collapsed"] and strict["thresholds"]["recall_max"] == 0.05
    assert detect_collapse([]) == {"collapsed": False, "reasons": [], "checked": [],
                                   "thresholds": {"prc_max": 0.05, "recall_max": 0.02, "coverage_max": 0.1,
                                                  "diversity_ratio": 0.25}}

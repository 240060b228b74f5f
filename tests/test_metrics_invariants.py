"""Invariants of the feature metrics and the shape of the records they produce."""
from __future__ import annotations

import numpy as np
import pytest

from medsynbench.metrics import compute_feature_metrics, frechet_distance, get_metric, list_metrics
from medsynbench.metrics.kid import kid_subset_values
from medsynbench.metrics.prdc import prdc


def _gauss(n, d, shift=0.0, scale=1.0, seed=0):
    return (shift + scale * np.random.default_rng(seed).standard_normal((n, d))).astype(np.float32)


def test_fd_of_a_set_with_itself_is_zero_and_symmetric():
    x, y = _gauss(200, 16), _gauss(150, 16, 0.3, 1.2, seed=1)
    assert abs(frechet_distance(x, x)) < 1e-9
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-10)
    assert frechet_distance(x, y) > 0.5


def test_fd_routes_agree_and_are_stable_below_feature_dimension():
    x, y = _gauss(40, 300), _gauss(30, 300, 0.1, seed=1)  # N << d: rank-deficient covariances
    cov, gram = frechet_distance(x, y, method="cov"), frechet_distance(x, y, method="gram")
    assert np.isfinite(cov) and cov == pytest.approx(gram, rel=1e-8)
    assert abs(frechet_distance(x, x, method="cov")) < 1e-6
    # known closed form: shifting every feature by a constant adds ||shift||^2
    assert frechet_distance(x, x + 0.5, method="gram") == pytest.approx(0.25 * 300, rel=1e-9)


def test_kid_seeded_reproducible_and_subset_size_capped():
    x, y = _gauss(120, 8), _gauss(80, 8, 0.5, seed=1)
    a, m = kid_subset_values(x, y, num_subsets=10, subset_size=1000, seed=3)
    b, _ = kid_subset_values(x, y, num_subsets=10, subset_size=1000, seed=3)
    c, _ = kid_subset_values(x, y, num_subsets=10, subset_size=50, seed=4)
    assert m == 80 and np.array_equal(a, b)
    assert not np.array_equal(a[:3], c[:3])
    rec = compute_feature_metrics(x, y, names=["kid"], kid_subsets=10)[0]
    assert rec["subset_size"] == 80 and "capped" in rec["warning"]
    # unbiased: two independent samples of one distribution give ~0, a shifted one clearly more
    p, q, shifted = _gauss(500, 8, seed=5), _gauss(500, 8, seed=6), _gauss(500, 8, 0.5, seed=7)
    same = compute_feature_metrics(p, q, names=["kid"], kid_subsets=1, kid_subset_size=500)[0]
    diff = compute_feature_metrics(p, shifted, names=["kid"], kid_subsets=1, kid_subset_size=500)[0]
    assert abs(same["value"]) < diff["value"] / 10


def test_prdc_identical_sets_and_disjoint_sets():
    x = _gauss(100, 5)
    same = prdc(x, x + 1e-9, k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 100, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_independent_of_chunk_size():
    x, y = _gauss(130, 6), _gauss(110, 6, 0.3, seed=2)
    from medsynbench.metrics.prdc import prdc_per_sample
    a, b = prdc_per_sample(x, y, k=4, chunk=7), prdc_per_sample(x, y, k=4, chunk=1000)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_records_carry_protocol_and_provenance():
    x, y = _gauss(60, 4), _gauss(50, 4, 0.2, seed=1)
    ext = {"name": "unet_encoder", "metric_suffix": "unet", "weights": "trained on abc", "preprocessing": {"r": 1}}
    recs = compute_feature_metrics(x, y, names=["fd", "fd_rr", "r_fd", "rel_fd", "kid", "prdc"], extractor=ext,
                                   seed=1, k=5, kid_subsets=5, bootstrap=10)
    by = {r["metric"]: r for r in recs}
    assert set(by) == {"fd_unet", "fd_rr_unet", "r_fd_unet", "rel_fd_unet", "kid_unet", "precision_k5_unet",
                       "recall_k5_unet", "density_k5_unet", "coverage_k5_unet"}
    for r in recs:
        assert r["extractor"] == "unet_encoder" and r["weights"] == "trained on abc"
        assert r["n_real"] == 60 and r["n_fake"] == 50 and r["implementation"].startswith("medsynbench")
        assert isinstance(r["higher_is_better"], bool)
    assert by["r_fd_unet"]["value"] * by["rel_fd_unet"]["value"] == pytest.approx(1.0)
    assert by["r_fd_unet"]["higher_is_better"] and not by["rel_fd_unet"]["higher_is_better"]
    assert by["fd_rr_unet"]["subset_size"] == 30  # two disjoint halves of 60 real, capped by 50 fake
    for name in ("fd_unet", "kid_unet", "precision_k5_unet"):
        r = by[name]
        assert r["bootstrap"] == 10 and r["ci_low"] <= r["ci_high"]
    assert by["precision_k5_unet"]["ci_low"] <= by["precision_k5_unet"]["value"] <= by["precision_k5_unet"]["ci_high"]
    again = compute_feature_metrics(x, y, names=["fd"], extractor=ext, seed=1, bootstrap=10)[0]
    assert (again["ci_low"], again["ci_high"]) == (by["fd_unet"]["ci_low"], by["fd_unet"]["ci_high"])


def test_fid_name_only_for_standard_inception_weights():
    x, y = _gauss(30, 4), _gauss(30, 4, seed=1)
    std = compute_feature_metrics(x, y, names=["fd", "fd_rr"], extractor={"name": "inception_fid",
                                  "metric_suffix": "inception", "standard_fid": True})
    custom = compute_feature_metrics(x, y, names=["fd"], extractor={"name": "inception_fid",
                                     "metric_suffix": "inception_custom", "standard_fid": False})
    assert [r["metric"] for r in std] == ["fid_inception", "fid_rr_inception"]
    assert custom[0]["metric"] == "fd_inception_custom"


def test_small_sample_warning_and_errors():
    x, y = _gauss(10, 32), _gauss(10, 32, seed=1)
    rec = compute_feature_metrics(x, y, names=["fd"])[0]
    assert "fewer samples" in rec["warning"]
    with pytest.raises(KeyError, match="valid names: .*kid"):
        get_metric("fid50k")
    with pytest.raises(TypeError, match="unknown metric options"):
        compute_feature_metrics(x, y, names=["fd"], kk=3)
    with pytest.raises(ValueError, match="NaN"):
        compute_feature_metrics(np.full((5, 2), np.nan), y[:, :2], names=["fd"])
    assert {"fd", "kid", "precision", "r_fd", "rel_fd", "delentropy"} <= set(list_metrics())

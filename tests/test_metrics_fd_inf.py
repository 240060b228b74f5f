"""FD∞ (Chong & Forsyth 2020): FD extrapolated linearly in 1/N to infinitely many samples.

Checked against the closed-form Fréchet distance of two Gaussians with diagonal covariances,
FD = |mu1 - mu2|² + Σ_i (s1_i + s2_i - 2 √(s1_i s2_i)), computed here independently of the implementation.
"""
import json

import numpy as np
import pytest

from medsynbench.metrics import compute_feature_metrics, get_metric
from medsynbench.metrics.frechet import fd_inf_metric, fd_inf_sizes, frechet_distance


def _gaussians(d, n, rng):
    mu = np.linspace(0.0, 0.6, d)
    var1, var2 = rng.uniform(0.5, 1.5, d), rng.uniform(0.5, 1.5, d)
    true = float(mu @ mu + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))
    real = rng.normal(size=(n, d)) * np.sqrt(var1)
    fake = mu + rng.normal(size=(n, d)) * np.sqrt(var2)
    return real, fake, true


def test_fd_inf_is_much_closer_to_the_true_distance_than_fd_at_the_same_n():
    rng = np.random.default_rng(0)
    err_fd, err_inf = [], []
    for _ in range(4):
        real, fake, true = _gaussians(32, 300, rng)
        err_fd.append(abs(frechet_distance(real, fake) - true))
        err_inf.append(abs(fd_inf_metric(real, fake, seed=0)["value"] - true))
    # plain FD at N=300, d=32 is biased upwards by ~d²/N-ish terms; FD∞ removes most of that bias
    assert np.mean(err_inf) < 0.3 * np.mean(err_fd), (err_inf, err_fd)


def test_fd_inf_records_its_fit_and_uses_the_seed_deterministically():
    real, fake, _ = _gaussians(16, 200, np.random.default_rng(1))
    a, b, c = (fd_inf_metric(real, fake, seed=s) for s in (3, 3, 4))
    assert a == b  # same seed, same subsamples, same fit
    assert a["value"] != c["value"]
    ns, fds = json.loads(a["fit_ns"]), json.loads(a["fit_fds"])
    assert ns == fd_inf_sizes(200, 16).tolist() and len(ns) == len(fds) == 10 and ns[-1] == 200
    assert a["fit_intercept"] == a["value"] and 0 <= a["fit_r2"] <= 1 and a["fit_slope"] > 0
    # the recorded fit reproduces the value: least squares of the recorded points
    slope, intercept = np.polyfit(1 / np.array(ns), fds, 1)
    assert intercept == pytest.approx(a["value"], abs=1e-4) and slope == pytest.approx(a["fit_slope"], rel=1e-4)


def test_fd_inf_warns_below_the_feature_dimension_and_is_registered():
    real, fake, _ = _gaussians(128, 80, np.random.default_rng(2))  # the quickstart's counts: 80 vs 80, d=128
    out = fd_inf_metric(real, fake)
    assert "singular" in out["warning"] and json.loads(out["fit_ns"])[0] >= 40
    assert not get_metric("fd_inf").higher_is_better
    (rec,) = compute_feature_metrics(real[:, :8], fake[:, :8], names=["fd_inf"],
                                     extractor={"name": "unet_encoder", "weights": "x"})
    assert rec["metric"] == "fd_inf_unet_encoder" and rec["fit_r2"] >= 0 and "fit_ns" in rec
    with pytest.raises(ValueError, match="at least 3"):
        fd_inf_metric(real[:2], fake[:2])


def test_quickstart_headline_kid_has_no_small_sample_warning():
    """At the quickstart's counts (80 real test images, 80 samples, 128-dim U-Net features) the headline kid_unet
    carries no warning, while fd is flagged as biased (that is why it is not the headline)."""
    from tests.conftest import compose_config

    cfg = compose_config(["experiment=quickstart"])
    assert cfg.metrics.extractors[0].name == "unet_encoder" and cfg.metrics.extractors[0].encoder_depth == 3
    real, fake, _ = _gaussians(128, 80, np.random.default_rng(3))
    options = {**cfg.metrics.options, "bootstrap": 0}
    recs = {r["base_metric"]: r for r in compute_feature_metrics(
        real, fake, names=list(cfg.metrics.feature_metrics), extractor={"name": "unet_encoder", "weights": "x",
                                                                        "metric_suffix": "unet"},
        seed=cfg.metrics.seed, **options)}
    assert "warning" not in recs["kid"] and recs["kid"]["subset_size"] == 80 and recs["kid"]["metric"] == "kid_unet"
    assert "strongly biased" in recs["fd"]["warning"] and "warning" in recs["fd_inf"]

"""KID fast paths: the "full" route (one kernel matrix, subsets as count vectors) and the per-subset route must give
the same numbers, including for subsets that repeat rows (bootstrap), and the mixed precision must stay within
the float32 tolerance of the float64 path."""
from __future__ import annotations

import numpy as np
import pytest

from medsynbench.metrics.bootstrap import confidence_interval
from medsynbench.metrics.kid import draw_subsets, kid_subset_values, mmd2_subsets, poly_mmd2


def _feats(n_real=120, n_fake=97, d=24, shift=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_real, d)).astype(np.float32),
            (shift + rng.standard_normal((n_fake, d))).astype(np.float32))


def test_routes_agree_on_distinct_subsets():
    real, fake = _feats()
    full, used_full = kid_subset_values(real, fake, 9, 40, seed=3, precision="float64", route="full")
    sub, _ = kid_subset_values(real, fake, 9, 40, seed=3, precision="float64", route="subsets")
    np.testing.assert_allclose(full, sub, rtol=1e-11, atol=1e-14)
    assert len(set(np.round(full, 12))) > 1  # the subsets really differ


def test_full_route_counts_repeated_rows_as_separate_samples():
    real, fake = _feats(seed=1)
    rng = np.random.default_rng(5)
    ri = [rng.integers(0, len(real), 30) for _ in range(4)]
    fi = [rng.integers(0, len(fake), 25) for _ in range(4)]
    got, route = mmd2_subsets(real, fake, ri, fi, precision="float64", route="full")
    assert route == "full"
    for j in range(4):  # explicit copies of the rows, the textbook estimator
        assert got[j] == pytest.approx(poly_mmd2(real[ri[j]], fake[fi[j]]), rel=1e-10)


def test_auto_route_picks_full_when_subsets_overlap_and_subsets_when_sparse():
    real, fake = _feats(n_real=60, n_fake=60)
    ri, fi = draw_subsets(60, 60, 20, 50, seed=0)
    assert mmd2_subsets(real, fake, ri, fi)[1] == "full"
    ri, fi = draw_subsets(60, 60, 1, 5, seed=0)
    assert mmd2_subsets(real, fake, ri, fi)[1] == "subsets"


def test_mixed_precision_within_float32_tolerance_of_float64():
    real, fake = _feats(n_real=400, n_fake=400, d=256, shift=0.05)
    mixed, _ = kid_subset_values(real, fake, 10, 200, seed=0, precision="mixed")
    exact, _ = kid_subset_values(real, fake, 10, 200, seed=0, precision="float64")
    assert mixed.mean() == pytest.approx(exact.mean(), rel=1e-5)
    assert not np.array_equal(mixed, exact)  # it really ran in float32


def test_subset_as_large_as_the_sets_gives_identical_subsets():
    real, fake = _feats(n_real=50, n_fake=50)
    values, m = kid_subset_values(real, fake, 5, 1000, seed=0, precision="float64")
    assert m == 50
    np.testing.assert_allclose(values, poly_mmd2(real, fake), rtol=1e-11)


def test_batched_kid_bootstrap_equals_replicate_by_replicate_loop():
    """The batched bootstrap must reproduce resampling the rows and running KID on each replicate."""
    real, fake = _feats(n_real=80, n_fake=70)
    params = {"kid_subset_size": 30, "kid_precision": "float64"}
    lo, hi, method = confidence_interval("kid", real, fake, params, n_boot=6, ci=0.9, seed=2, kid_subsets=4)
    rng = np.random.default_rng([2, 7919])
    loop = []
    for b in range(6):
        r = real[rng.integers(0, len(real), len(real))]
        f = fake[rng.integers(0, len(fake), len(fake))]
        loop.append(kid_subset_values(r, f, 4, 30, seed=2 + 1 + b, precision="float64", route="subsets")[0].mean())
    exp_lo, exp_hi = np.quantile(loop, [0.05, 0.95])
    assert (lo, hi) == pytest.approx((exp_lo, exp_hi), rel=1e-9)
    assert "4 subsets per replicate" in method


def test_invalid_options_are_rejected():
    real, fake = _feats()
    with pytest.raises(ValueError, match="precision"):
        kid_subset_values(real, fake, precision="float16")
    with pytest.raises(ValueError, match="route"):
        kid_subset_values(real, fake, route="fast")

"""Agreement with the values independent libraries computed on the shared reference features (SUMMARY.md
tolerances), and with the peer libraries installed here on fresh features."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynbench.metrics.frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats
from medsynbench.metrics.kid import kid_subset_values, poly_mmd2
from medsynbench.metrics.prdc import prdc

REFS = Path(__file__).resolve().parents[1].parent / "shared" / "metric-refs"


@pytest.fixture(scope="module")
def refs():
    if not (REFS / "reference_values.json").is_file():
        pytest.skip(f"metric reference values not available: {REFS} is absent (only in the project's build environment)")
    spec = importlib.util.spec_from_file_location("features_regen", REFS / "features_regen.py")
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    values = json.loads((REFS / "reference_values.json").read_text())["cases"]
    cache = {}

    def case(name):
        if name not in cache:
            cache[name] = regen.make(*regen.CASES[name])
        return cache[name]
    return values, case


FD_REF = {"d64_n2000": 4.490390954, "d2048_n2000": 1364.809000, "d2048_n500": 3010.915656,
          "d2048_n5000": 607.8458188, "d2048_n2000_mild_mean0.05_scale1.0": 1057.576117}
KID_FULL_REF = {"d64_n2000": 0.042694021, "d2048_n2000": 0.030465177, "d2048_n500": 0.029955376,
                "d2048_n2000_mild_mean0.05_scale1.0": 0.0075091822}
KID_TF2020_REF = {"d64_n2000": 0.0426564, "d2048_n2000": 0.0305203,
                  "d2048_n2000_mild_mean0.05_scale1.0": 0.00753645}
PRDC_REF = {("d64_n2000", 3): (0.079, 0.986, 0.0403333, 0.1085), ("d64_n2000", 5): (0.1195, 0.994, 0.0428, 0.1825),
            ("d2048_n2000_mild_mean0.05_scale1.0", 3): (0.4265, 0.3945, 0.87, 0.8405),
            ("d2048_n2000_mild_mean0.05_scale1.0", 5): (0.5125, 0.4955, 0.8846, 0.949)}


def _full_value(values, case, lib_key):
    return values[case]["frechet_distance"][lib_key]["value"]


# d=2048 eigh calls take seconds on a shared CPU: both Fréchet routes only where they are cheap
FD_CASES = [pytest.param(c, m) for c in FD_REF if c != "d2048_n5000" for m in ("auto",)] + [
    pytest.param("d64_n2000", "cov"), pytest.param("d64_n2000", "gram"), pytest.param("d2048_n500", "cov"), pytest.param("d2048_n500", "gram"),
    pytest.param("d2048_n2000", "cov", marks=pytest.mark.slow)]


@pytest.mark.parametrize("case,method", FD_CASES)
def test_frechet_matches_reference(refs, case, method):
    values, make = refs
    real, fake = make(case)
    fd = frechet_distance(real, fake, method=method)
    assert fd == pytest.approx(FD_REF[case], rel=1e-6)
    # also the full-precision value pytorch-fid (scipy sqrtm) stored for this case
    assert fd == pytest.approx(_full_value(values, case, "pytorch_fid.fid_score.calculate_frechet_distance"), rel=1e-6)


@pytest.mark.slow
def test_frechet_full_rank_n5000(refs):
    _, make = refs
    real, fake = make("d2048_n5000")
    assert frechet_distance(real, fake) == pytest.approx(FD_REF["d2048_n5000"], rel=1e-6)


@pytest.mark.parametrize("case", list(KID_FULL_REF))
def test_kid_full_set_matches_reference(refs, case):
    _, make = refs
    real, fake = make(case)
    value = poly_mmd2(torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64))
    assert value == pytest.approx(KID_FULL_REF[case], rel=1e-6)


@pytest.mark.parametrize("case", ["d64_n2000", pytest.param("d2048_n2000_mild_mean0.05_scale1.0",
                                                            marks=pytest.mark.slow)])
def test_kid_subsets_reproduce_torch_fidelity_sampler(refs, case):
    _, make = refs
    real, fake = make(case)
    values, m = kid_subset_values(real, fake, num_subsets=100, subset_size=1000, seed=2020)
    assert m == 1000
    assert values.mean() == pytest.approx(KID_TF2020_REF[case], rel=1e-4)  # reference is float32, 6 digits


@pytest.mark.parametrize("case,k", list(PRDC_REF))
def test_prdc_matches_reference(refs, case, k):
    _, make = refs
    real, fake = make(case)
    out = prdc(real, fake, k=k)
    got = (out["precision"], out["recall"], out["density"], out["coverage"])
    np.testing.assert_allclose(got, PRDC_REF[(case, k)], atol=max(1 / (k * len(real)), 5e-5))


def test_degenerate_prdc_case(refs):
    """SUMMARY.md: at d=2048 the m=0.1, s=1.2 case gives P=0, R=1, D=0, C=0."""
    _, make = refs
    real, fake = make("d2048_n500")
    assert prdc(real, fake, k=3) == {"precision": 0.0, "density": 0.0, "recall": 1.0, "coverage": 0.0}


# ---- peers installed here, on fresh features (no shared files needed) -----------------------------------------

def _features(n=300, d=40, seed=1):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (0.2 + 1.1 * rng.standard_normal((n + 17, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d)))).astype(np.float32)
    return real, fake


def test_frechet_matches_pytorch_fid_scipy_route():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    real, fake = _features()
    mu1, s1 = np.mean(real.astype(np.float64), 0), np.cov(real, rowvar=False)
    mu2, s2 = np.mean(fake.astype(np.float64), 0), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy sqrtm(disp=False), see SUMMARY.md
        ref = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(real, fake) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_from_stats(*gaussian_stats(real), *gaussian_stats(fake)) == pytest.approx(ref, rel=1e-8)


def test_kid_matches_torch_fidelity_with_same_seed():
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    real, fake = _features()
    ref = metric_kid.kid_features_to_metric(torch.from_numpy(real).double(), torch.from_numpy(fake).double(),
                                            kid_subsets=7, kid_subset_size=100, rng_seed=5, verbose=False,
                                            kid_degree=3, kid_gamma=None, kid_coef0=1)
    for route in ("full", "subsets"):  # float64 end to end: same numbers as torch-fidelity on float64 features
        values, _ = kid_subset_values(real, fake, num_subsets=7, subset_size=100, seed=5, precision="float64",
                                      route=route)
        assert values.mean() == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9), route
        assert values.std() == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-6), route
    # the default mixed precision (float32 products, float64 sums) stays far inside the float32 tolerance (1e-4)
    mixed, _ = kid_subset_values(real, fake, num_subsets=7, subset_size=100, seed=5)
    assert mixed.mean() == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)


def test_prdc_matches_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    real, fake = _features()
    for k in (3, 5):
        ref = prdc_pkg.compute_prdc(real.astype(np.float64), fake.astype(np.float64), nearest_k=k)
        ours = prdc(real, fake, k=k)
        for key in ("precision", "recall", "density", "coverage"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), key

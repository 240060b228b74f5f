"""Inception Score (against torch-fidelity and closed-form cases) and perceptual path length (scaling law, seeding,
LPIPS loading from weights made here, clear errors)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynbench.metrics import compute_feature_metrics
from medsynbench.metrics.inception_score import inception_score
from medsynbench.metrics.ppl import LPIPSDistance, perceptual_path_length, ppl_metric


# ---- Inception Score -------------------------------------------------------------------------------------------

def test_inception_score_closed_forms():
    n, c = 200, 8
    assert inception_score(torch.zeros(n, c))[0] == pytest.approx(1.0)  # uniform p(y|x): no information
    confident = torch.full((n, c), -50.0)
    confident[torch.arange(n), torch.arange(n) % c] = 50.0  # certain and evenly spread over c classes
    assert inception_score(confident, splits=5, shuffle=False)[0] == pytest.approx(c, rel=1e-6)
    collapsed = torch.full((n, c), -50.0)
    collapsed[:, 3] = 50.0  # certain but always the same class
    assert inception_score(collapsed)[0] == pytest.approx(1.0, rel=1e-6)


def test_inception_score_matches_torch_fidelity():
    metric_isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.randn(300, 20, generator=torch.Generator().manual_seed(0)) * 3
    ref = metric_isc.isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=7)
    mean, std = inception_score(logits, splits=10, seed=7)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-8)


def test_inception_score_needs_logit_features_and_names_the_weights():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((40, 10)), rng.standard_normal((30, 10))
    with pytest.raises(ValueError, match="needs class logits"):
        compute_feature_metrics(real, fake, names=["is"], extractor={"name": "unet_encoder", "weights": "x"})
    ext = {"name": "inception_fid", "metric_suffix": "inception_custom", "weights": "/tmp/random.pth", "logits": True}
    (rec,) = compute_feature_metrics(real, fake, names=["is"], extractor=ext, is_splits=5)
    assert rec["metric"] == "is_inception_custom" and rec["weights"] == "/tmp/random.pth"
    assert rec["value"] == pytest.approx(inception_score(fake, splits=5, seed=0)[0])
    assert rec["is_real"] == pytest.approx(inception_score(real, splits=5, seed=0)[0])


# ---- PPL -------------------------------------------------------------------------------------------------------

def _tiny_stylegan(seed=0, **kw):
    from medsynbench.gans.stylegan2 import StyleGAN2
    torch.manual_seed(seed)
    return StyleGAN2("stylegan2", image_size=16, image_channels=1, latent_dim=16, w_dim=16, mapping_layers=2,
                     channel_base=128, channel_max=16, ada=False, **kw)


def _pixel_sq(a, b):
    return ((a - b) ** 2).flatten(1).sum(1)


def test_ppl_scales_quadratically_with_the_output_and_is_seeded():
    gan = _tiny_stylegan()
    kw = dict(num_samples=24, batch_size=12, seed=3)
    base = perceptual_path_length(gan, _pixel_sq, **kw)
    again = perceptual_path_length(gan, _pixel_sq, **kw)
    other = perceptual_path_length(gan, _pixel_sq, **{**kw, "seed": 4})
    assert base["value"] > 0 and base["value"] == again["value"] and other["value"] != base["value"]
    with torch.no_grad():  # the image is the sum of toRGB outputs: doubling their weights doubles every difference
        for rgb in gan.g_ema.synthesis.torgbs:
            rgb.weight.mul_(2)
    doubled = perceptual_path_length(gan, _pixel_sq, **kw)
    assert doubled["value"] == pytest.approx(4 * base["value"], rel=1e-3)
    z_full = perceptual_path_length(gan, _pixel_sq, space="z", sampling="full", **kw)
    assert z_full["value"] > 0 and z_full["protocol"].startswith("ppl_zfull")


def test_ppl_zero_for_a_generator_that_ignores_its_latent():
    gan = _tiny_stylegan()
    with torch.no_grad():  # styles = affine(w) become constant: the image no longer depends on w
        for m in gan.g_ema.synthesis.modules():
            if hasattr(m, "affine"):
                m.affine.weight.zero_()
    out = perceptual_path_length(gan, _pixel_sq, num_samples=8, batch_size=8)
    assert out["value"] == pytest.approx(0.0, abs=1e-6)


def test_ppl_rejects_non_style_generators():
    class Plain:
        name = "dcgan"
        g_ema = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="style-based generator"):
        perceptual_path_length(Plain(), _pixel_sq)


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """A random-init torchvision VGG16 backbone made here (only its features.*; not the ImageNet weights)."""
    import torchvision
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.vgg16(weights=None).state_dict().items() if k.startswith("features")}
    path = tmp_path_factory.mktemp("vgg") / "random_vgg16_features.pth"
    torch.save(state, path)
    return path


def test_lpips_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(RuntimeError, match="(?s)VGG16 backbone weights are missing.*vgg_weights_path"):
        LPIPSDistance()
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="not a torchvision vgg16 state dict"):
        LPIPSDistance(str(bad))


def test_lpips_loads_local_backbone_and_ppl_records_its_weights(vgg_features_file):
    dist = LPIPSDistance(str(vgg_features_file))
    state = torch.load(vgg_features_file)
    assert torch.equal(dist.net.net.slice1[0].weight, state["features.0.weight"])  # really loaded
    assert torch.equal(getattr(dist.net.net.slice5, "28").weight, state["features.28.weight"])
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1, torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(dist(a, a), torch.zeros(3), atol=1e-7)
    assert (dist(a, b) > 0).all()
    out = ppl_metric(_tiny_stylegan(), distance=dist, num_samples=6, batch_size=6)
    assert out["value"] > 0 and out["distance"] == "lpips_vgg16"
    assert out["weights"] == str(vgg_features_file) and len(out["weights_sha256"]) == 64

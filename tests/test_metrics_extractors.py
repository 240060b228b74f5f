"""Extractor registry, preprocessing provenance, batch-size independence, the trained U-Net encoder and its cache,
missing-weights errors, and the feature cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from medsynbench.metrics import FeatureCache, get_extractor, list_extractors


def _images(n=12, c=1, size=32, seed=0):
    return torch.rand((n, c, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registry_lists_names_and_rejects_unknown():
    names = list_extractors()
    assert {"inception_fid", "random_cnn", "unet_encoder"} <= set(names)
    with pytest.raises(KeyError, match="valid names: .*unet_encoder"):
        get_extractor("vgg_magic")
    with pytest.raises(KeyError, match="valid names"):
        get_extractor("keras:resnet50")


def test_random_cnn_seeded_and_batch_size_independent():
    x = _images()
    a = get_extractor("random_cnn", seed=3, feature_dim=16)
    f1 = a.features(x, batch_size=5, progress=False)
    f2 = get_extractor("random_cnn", seed=3, feature_dim=16).features(x, batch_size=12, progress=False)
    f3 = get_extractor("random_cnn", seed=4, feature_dim=16).features(x, batch_size=12, progress=False)
    assert f1.shape == (12, 16) and f1.dtype == np.float32
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f1, f3)
    assert "random-init seed=3" in a.describe()["weights"]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        a.features(x * 3, progress=False)


def test_unet_encoder_trains_once_and_is_cached(tmp_path):
    x = _images(16, 1, 32)
    masks = (x[:, 0] > 0).long()
    kw = dict(train_images=x, train_masks=masks, cache_dir=str(tmp_path), steps=3, batch_size=8, seed=0)
    first = get_extractor("unet_encoder", **kw)
    desc = first.describe()
    assert desc["training"]["objective"] == "segmentation" and desc["trained_on_sha256"]
    assert "trained here on training split" in desc["weights"] and desc["feature_dim"] == 128
    f1 = first.features(x, batch_size=5, progress=False)
    second = get_extractor("unet_encoder", **kw)
    assert second.cached and not first.cached
    np.testing.assert_allclose(second.features(x, batch_size=16, progress=False), f1, rtol=1e-4, atol=1e-5)
    other = get_extractor("unet_encoder", **{**kw, "train_images": x.flip(0)})  # other data: other hash, retrained
    assert other.describe()["trained_on_sha256"] != desc["trained_on_sha256"] and not other.cached
    auto = get_extractor("unet_encoder", train_images=x, steps=2, batch_size=8)
    assert auto.describe()["training"]["objective"] == "denoising"
    with pytest.raises(ValueError, match="train_set"):
        get_extractor("unet_encoder")


def test_inception_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(RuntimeError, match="(?s)weights_path=.*TORCH_HOME"):
        get_extractor("inception_fid", weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(RuntimeError, match="hub"):
        get_extractor("inception_fid", allow_download=False)


def test_inception_with_local_non_standard_weights_is_not_called_fid(tmp_path, monkeypatch):
    """Random weights made here exercise the loading path; their hash is not the standard one -> no 'fid' name."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    placeholder = tmp_path / "empty.pth"
    torch.save({}, placeholder)
    with monkeypatch.context() as m:
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = fe.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(placeholder))
    weights = tmp_path / "random_inception.pth"
    torch.save(net.state_dict(), weights)
    ext = get_extractor("inception_fid", weights_path=str(weights))
    feats = ext.features(_images(2, 1, 32), progress=False)
    desc = ext.describe()
    assert feats.shape == (2, 2048)
    assert not desc["standard_fid"] and desc["metric_suffix"] == "inception_custom"
    assert desc["weights_sha256"] and desc["preprocessing"]["resize"] == 299


def test_torchvision_and_timm_from_local_weights(tmp_path):
    import torchvision
    with pytest.raises(ValueError, match="weights_path is required"):
        get_extractor("torchvision:resnet18")
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    ext = get_extractor("torchvision:resnet18", weights_path=str(path), resize=32, weights_label="radimagenet")
    feats = ext.features(_images(3, 1, 40), progress=False)
    desc = ext.describe()
    assert feats.shape == (3, 512) and desc["metric_suffix"] == "radimagenet"
    assert desc["preprocessing"] == {"gray_to_rgb": "repeat", "resize": 32, "resize_filter": "bilinear",
                                     "antialias": True, "normalise": "imagenet"}
    assert len(desc["weights_sha256"]) == 64
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="lacks"):
        get_extractor("torchvision:resnet18", weights_path=str(wrong))
    timm = pytest.importorskip("timm")
    tpath = tmp_path / "timm.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tpath)
    t = get_extractor("timm:resnet10t", weights_path=str(tpath), resize=32)
    assert t.features(_images(2, 3, 32), progress=False).shape[0] == 2


def test_feature_cache_hits_and_writes_atomically(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []
    key = {"dataset": "d", "split": "test", "ids": "abc", "extractor": {"name": "x", "preprocessing": {"r": 1}}}

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(3, 2)

    a = cache.get_or_compute(key, compute)
    b = cache.get_or_compute(json.loads(json.dumps(key)), compute)  # equal content, new object
    assert len(calls) == 1 and np.array_equal(a, b)
    cache.get_or_compute({**key, "split": "train"}, compute)
    assert len(calls) == 2
    files = sorted(os.listdir(tmp_path))
    assert not [f for f in files if f.endswith(".tmp")] and len([f for f in files if f.endswith(".npy")]) == 2
    meta = json.loads(cache.path_for(key).with_suffix(".json").read_text())
    assert meta["key"]["split"] == "test" and meta["shape"] == [3, 2]

"""Weights rules: random init by default; a missing file or unreachable ImageNet download is a clear error (never a
silent random fallback); a local weights file is really loaded and recorded with its sha256."""
from __future__ import annotations

import hashlib

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

import segmentation_models_pytorch.encoders as smp_encoders
from medsynbench.downstream import WeightsUnavailableError, parse_settings, run_downstream
from medsynbench.downstream import classification, segmentation
from tests.test_downstream_core import TINY_CLS, TINY_SEG, _set


def test_missing_weights_file_names_the_key_and_the_fix(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match=r"encoder_weights.*does not exist.*imagenet.*null"):
        run_downstream({**TINY_SEG, "encoder_weights": str(missing)}, _set(4, 0), None, _set(4, 1), 3, 2, "cpu", 0)
    with pytest.raises(WeightsUnavailableError, match=r"pretrained.*does not exist"):
        run_downstream({**TINY_CLS, "pretrained": str(missing)}, _set(4, 0), None, _set(4, 1), 3, 2, "cpu", 0)


def test_offline_imagenet_download_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")
    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    with pytest.raises(WeightsUnavailableError, match=r"ImageNet weights for encoder 'resnet18'.*offline.*"
                                                      r"encoder_weights=/path/to/weights.pth"):
        segmentation.build_model(parse_settings({**TINY_SEG, "encoder_weights": "imagenet"}), 3, 2)

    def no_timm(*args, **kwargs):
        raise RuntimeError("Name or service not known")
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_timm)
    with pytest.raises(WeightsUnavailableError, match=r"timm model 'efficientnet_b0'.*pretrained=/path"):
        classification.build_model(parse_settings({**TINY_CLS, "pretrained": "imagenet"}), 3, 2)


def test_local_encoder_weights_are_loaded_and_recorded(tmp_path):
    torch.manual_seed(7)
    source = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4])
    path = tmp_path / "resnet18_encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    s = parse_settings({**TINY_SEG, "encoder_weights": str(path)})
    model, desc = segmentation.build_model(s, in_channels=1, num_classes=2)
    assert desc == f"{path} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    loaded, original = model.encoder.state_dict(), source.encoder.state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], original["layer1.0.conv1.weight"])
    assert loaded["conv1.weight"].shape[1] == 1  # first conv adapted to grey input
    # a file for another encoder is rejected, naming the file
    torch.save({"foo.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsUnavailableError, match="does not fit encoder"):
        segmentation.build_model(s, in_channels=3, num_classes=2)


def test_local_timm_checkpoint_is_loaded_and_recorded(tmp_path):
    torch.manual_seed(3)
    source = timm.create_model("efficientnet_b0", pretrained=False)
    path = tmp_path / "effnet.pth"
    torch.save(source.state_dict(), path)
    recs = run_downstream({**TINY_CLS, "pretrained": str(path)}, _set(6, 0), None, _set(4, 1), 3, 2, "cpu", 0,
                          train_on=("real",))
    assert recs[0]["weights"] == f"{path} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    model, _ = classification.build_model(parse_settings({**TINY_CLS, "pretrained": str(path)}), 3, 2)
    assert torch.equal(model.state_dict()["blocks.1.0.conv_dw.weight"], source.state_dict()["blocks.1.0.conv_dw.weight"])

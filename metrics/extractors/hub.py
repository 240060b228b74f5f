"""Any torchvision or timm model as a feature extractor, from a local weights file (ImageNet, RadImageNet, ...).

The classification head is removed, so features are the penultimate (pooled) activations. Weights must be a local
state-dict file: this machine has no internet, and a silent random-init fallback would produce meaningless numbers.
``weights_path="random-init"`` is accepted explicitly for plumbing tests and is recorded as such.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsynbench.metrics.extractors.base import FeatureExtractor, Preprocess, file_sha256


def _strip_head(model: nn.Module) -> nn.Module:
    for attr in ("fc", "classifier", "head", "heads", "last_linear"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise ValueError(f"don't know where the classification head of {type(model).__name__} is; "
                     "expected one of fc / classifier / head / heads")


def _load_state_dict(path: Path) -> dict:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items()}


class HubExtractor(FeatureExtractor):
    def __init__(self, library: str, model_name: str, weights_path: str | None = None, resize: int | None = 224,
                 resize_filter: str = "bilinear", gray_to_rgb: str = "repeat", normalise: str = "imagenet",
                 weights_label: str | None = None, seed: int = 0, model_kwargs: dict | None = None):
        super().__init__()
        self.name = f"{library}:{model_name}"
        self.metric_suffix = (weights_label or model_name).replace("/", "_").replace(".", "_").replace("-", "_")
        self.preprocess = Preprocess(gray_to_rgb=gray_to_rgb, resize=resize, resize_filter=resize_filter,
                                     normalise=normalise)
        if not weights_path:
            raise ValueError(
                f"{self.name}: weights_path is required (no downloads here). Save a state dict on a machine with "
                f"internet, e.g. torch.save(torchvision.models.get_model('{model_name}', weights='DEFAULT')"
                f".state_dict(), 'w.pth'), or point to RadImageNet-style weights; weights_path='random-init' "
                f"builds an untrained network for plumbing tests only")
        torch.manual_seed(seed)
        if library == "torchvision":
            import torchvision
            model = torchvision.models.get_model(model_name, weights=None, **(model_kwargs or {}))
        else:
            import timm
            model = timm.create_model(model_name, pretrained=False, **(model_kwargs or {}))
        if weights_path == "random-init":
            self.weights = f"random-init seed={seed} (untrained: plumbing only)"
            self.metric_suffix += "_random_init"
        else:
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{self.name}: weights file {path} does not exist")
            missing, unexpected = model.load_state_dict(_load_state_dict(path), strict=False)
            if missing:
                raise ValueError(f"{self.name}: weights file {path} lacks {len(missing)} parameters of the model, "
                                 f"e.g. {missing[:3]}; is it for a different architecture?")
            if unexpected:
                raise ValueError(f"{self.name}: weights file {path} has {len(unexpected)} unexpected keys, "
                                 f"e.g. {unexpected[:3]}")
            self.weights, self.weights_sha256 = str(path), file_sha256(path)
        if library == "timm":
            model.reset_classifier(0)
        else:
            _strip_head(model)
        self.model = model.eval()

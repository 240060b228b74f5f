"""The standard FID Inception-v3 (pool3, 2048-d) via torch-fidelity, with its TF1-compatible bilinear resize.

Weights come from ``weights_path`` (a local file), else torch-fidelity's file in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/``), else the library's normal download. Nothing falls back silently: without weights
this raises an error saying how to provide them. Metrics are named ``fid_inception`` only when the weights' SHA-256
matches the standard file (its name carries the hash prefix, the torch.hub convention); other weights loaded into
the same network are reported as ``fd_inception_custom``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from medsynbench.metrics.extractors import register_extractor
from medsynbench.metrics.extractors.base import FeatureExtractor, Preprocess, file_sha256

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_SHA256_PREFIX = "6726825d"


def _hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _missing_weights_error(cause: Exception | None, tried: list[str]) -> RuntimeError:
    return RuntimeError(
        "inception_fid: the FID Inception-v3 weights are not available "
        f"(tried: {', '.join(tried)}{'; download failed: ' + repr(cause) if cause else ''}). Provide them by one of:\n"
        f"  - metrics extractor option weights_path=/path/to/{WEIGHTS_FILE}\n"
        f"  - copying that file to {_hub_path()} (set $TORCH_HOME to move the hub directory)\n"
        "  - running once with internet access (torch-fidelity downloads it from its GitHub release).\n"
        "Without them use extractor unet_encoder (no outside weights) and report fd_unet, not FID.")


class InceptionFID(FeatureExtractor):
    name = "inception_fid"

    def __init__(self, weights_path: str | None = None, allow_download: bool = True, standard_sha256: str | None = None,
                 features: str = "2048", **_context):
        super().__init__()
        # _forward does torch-fidelity's own preprocessing; the generic step must leave [-1, 1] untouched.
        self.preprocess = Preprocess(gray_to_rgb="none", normalise="minus_one_one")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        tried = []
        path = Path(os.path.expanduser(weights_path)) if weights_path else None
        if path is not None:
            tried.append(str(path))
            if not path.is_file():
                raise _missing_weights_error(None, tried)
        elif _hub_path().is_file():
            path = _hub_path()
            tried.append(str(path))
        else:
            tried.append(str(_hub_path()))
            if not allow_download:
                raise _missing_weights_error(None, tried)
            try:
                torch.hub.load_state_dict_from_url(
                    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE, progress=False)
            except Exception as err:  # URLError offline, HTTP errors, ...
                raise _missing_weights_error(err, tried + ["download"]) from err
            path = _hub_path()
        self.model = FeatureExtractorInceptionV3("inception-v3-compat", [features],
                                                 feature_extractor_weights_path=str(path))
        self.weights = str(path)
        self.weights_sha256 = file_sha256(path)
        self.standard_fid = (self.weights_sha256 == standard_sha256 if standard_sha256
                             else self.weights_sha256.startswith(STANDARD_SHA256_PREFIX))
        self.metric_suffix = "inception" if self.standard_fid else "inception_custom"
        self.feature_dim = 2048 if features == "2048" else None
        self.layer = features

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch-fidelity takes uint8 RGB and does the TF1-compatible resize to 299 and (x - 128) / 128 itself.
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.model(x)[0]

    def describe(self) -> dict:
        d = super().describe()
        d["preprocessing"] = {"gray_to_rgb": "repeat", "quantise": "uint8 round((x+1)*127.5)",
                              "resize": 299, "resize_filter": "bilinear, TF1-compatible (torch-fidelity)",
                              "normalise": "(x-128)/128", "layer": self.layer}
        if self.layer.startswith("logits"):  # class logits: the Inception Score may use them
            d.update(logits=True, layer=self.layer)
        return d


@register_extractor("inception_fid")
def _factory(**kwargs) -> InceptionFID:
    return InceptionFID(**kwargs)

"""Feature extractor base class and the explicit input preprocessing every extractor records.

Images arrive in the project convention (float32 [N, C, H, W] in [-1, 1]); medical images are often 1-channel,
so the grayscale→3-channel policy, resize size + filter and normalisation are explicit options, recorded in
``describe()``: they move Fréchet distances a lot and peers silently differ on them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsynbench.io import array_hash
from medsynbench.io import sha256_file as file_sha256  # noqa: F401  (re-exported: extractors use it)
from medsynbench.nn import IMAGENET_MEAN, IMAGENET_STD  # one copy of the ImageNet normalisation


@dataclass
class Preprocess:
    """[-1, 1] images → network input. All fields are recorded with every feature set."""

    gray_to_rgb: str = "repeat"          # "repeat" (copy the channel 3×) | "none" (keep channels)
    resize: int | None = None            # square output size, None = keep
    resize_filter: str = "bilinear"      # bilinear | bicubic | nearest | area
    antialias: bool = True               # torch antialiasing when downsampling (bilinear/bicubic)
    normalise: str = "imagenet"          # imagenet (mean/std on [0,1]) | minus_one_one | zero_one

    def __post_init__(self):
        choices = {"gray_to_rgb": ("repeat", "none"), "resize_filter": ("bilinear", "bicubic", "nearest", "area"),
                   "normalise": ("imagenet", "minus_one_one", "zero_one")}
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise ValueError(f"preprocessing {field}={getattr(self, field)!r} is not one of {valid}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")
        x = x.float()
        if self.gray_to_rgb == "repeat" and x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            kw = {"align_corners": False, "antialias": self.antialias} if self.resize_filter in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.resize_filter, **kw)
        if self.normalise == "minus_one_one":
            return x
        x = (x + 1) / 2
        if self.normalise == "imagenet":
            if x.shape[1] != 3:
                raise ValueError(f"imagenet normalisation needs 3 channels, got {x.shape[1]}; use gray_to_rgb=repeat")
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def describe(self) -> dict:
        return asdict(self)


class FeatureExtractor:
    """Subclasses set ``self.model`` (or override ``_forward``), ``self.preprocess`` and the provenance fields."""

    name: str = "base"
    metric_suffix: str = "features"
    standard_fid: bool = False

    def __init__(self):
        self.weights = "unknown"
        self.weights_sha256 = None
        self.preprocess = Preprocess()
        self.feature_dim: int | None = None
        self.extra: dict = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _to(self, device: str):
        if getattr(self, "model", None) is not None:
            self.model.to(device).eval()

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 64, device: str = "cpu", progress: bool = True) -> np.ndarray:
        """[N, C, H, W] images in [-1, 1] → float32 [N, d] features (batch-size independent: eval mode)."""
        images = torch.as_tensor(images)
        if images.ndim != 4:
            raise ValueError(f"{self.name}: images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if len(images) and (images.min() < -1.001 or images.max() > 1.001):
            raise ValueError(f"{self.name}: images must be in [-1, 1], got range "
                             f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")
        self._to(device)
        out = []
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm import tqdm
            starts = tqdm(starts, desc=f"features {self.name}", unit="batch", leave=False)
        for s in starts:
            x = self.preprocess(images[s:s + batch_size].to(device))
            f = self._forward(x)
            out.append(f.flatten(1).double().cpu())
        feats = torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.feature_dim or 0), np.float32)
        self.feature_dim = feats.shape[1] if feats.size else self.feature_dim
        return feats

    def weights_digest(self) -> str:
        """SHA-256 of the network's actual parameters and buffers (computed once). Cached features are keyed by it,
        so features made by one network never meet another network's, even under the same settings."""
        if getattr(self, "_weights_digest", None) is None:
            module = getattr(self, "net", None) or getattr(self, "model", None)
            if module is None:
                raise ValueError(f"{self.name}: no network to hash (set self.model or self.net)")
            state = module.state_dict()
            self._weights_digest = array_hash(*(state[k] for k in sorted(state)),
                                              np.frombuffer(" ".join(sorted(state)).encode(), np.uint8))
        return self._weights_digest

    def describe(self) -> dict:
        return {"name": self.name, "metric_suffix": self.metric_suffix, "standard_fid": self.standard_fid,
                "weights": self.weights, "weights_sha256": self.weights_sha256,
                "preprocessing": self.preprocess.describe(), "feature_dim": self.feature_dim, **self.extra}

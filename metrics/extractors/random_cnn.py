"""A seeded random-init conv net: plumbing and throughput tests only; its numbers are labelled ``fd_random_cnn``."""
from __future__ import annotations

import torch
from torch import nn

from medsynbench.io import content_hash
from medsynbench.metrics.extractors import register_extractor
from medsynbench.metrics.extractors.base import FeatureExtractor, Preprocess


class RandomCNN(FeatureExtractor):
    name = "random_cnn"
    metric_suffix = "random_cnn"

    def __init__(self, feature_dim: int = 64, seed: int = 0, gray_to_rgb: str = "none", resize: int | None = None,
                 resize_filter: str = "bilinear", normalise: str = "minus_one_one", in_channels: int | None = None,
                 **_context):
        super().__init__()
        self.preprocess = Preprocess(gray_to_rgb=gray_to_rgb, resize=resize, resize_filter=resize_filter,
                                     normalise=normalise)
        self.seed, self.width = seed, feature_dim
        self.model = None if in_channels is None else self._build(in_channels)
        self.weights = f"random-init seed={seed} (not a trained network: plumbing only)"
        self.feature_dim = feature_dim

    def _build(self, in_channels: int) -> nn.Module:
        g = torch.Generator().manual_seed(self.seed)
        w = self.width
        net = nn.Sequential(nn.Conv2d(in_channels, w // 2, 3, 2, 1), nn.LeakyReLU(0.2),
                            nn.Conv2d(w // 2, w, 3, 2, 1), nn.LeakyReLU(0.2),
                            nn.Conv2d(w, w, 3, 2, 1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1))
        with torch.no_grad():
            for p in net.parameters():  # seeded, independent of the global RNG state
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1) / max(1, p[0].numel()) ** 0.5 * 2)
        return net.eval()

    def _forward(self, x):
        if self.model is None or self.model[0].in_channels != x.shape[1]:
            self.model = self._build(x.shape[1]).to(x.device)
        return self.model(x)

    def weights_digest(self) -> str:
        """Built lazily for the input's channel count: its weights are a pure function of (seed, width, channels),
        and the channels follow from the images, which feature caches key by content."""
        return content_hash({"random_cnn": 1, "seed": self.seed, "width": self.width})

    def describe(self) -> dict:
        return {**super().describe(), "seed": self.seed}


@register_extractor("random_cnn")
def _factory(**kwargs) -> RandomCNN:
    return RandomCNN(**kwargs)

"""Perceptual (VGG) loss of Table 1. It is only meaningful with ImageNet-pretrained VGG19 weights, so it never
falls back to random weights: without weights it raises :class:`MissingWeightsError` naming what to provide.

``weights`` is either a local file (a torchvision VGG19 state dict, e.g. ``vgg19-dcbb9e9d.pth``) or the string
``"torchvision"`` (torchvision downloads ``VGG19_Weights.IMAGENET1K_V1`` into its cache; needs internet).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import vgg19

from medsynbench.nn import IMAGENET_MEAN, IMAGENET_STD

# ReLU outputs used by pix2pixHD / SPADE's VGG loss, with their weights.
LAYER_IDS = (1, 6, 11, 20, 29)
LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are needed and were not found."""


def load_vgg19_state(weights: str | None) -> dict:
    if not weights:
        raise MissingWeightsError(
            "vgg_weight > 0 needs ImageNet-pretrained VGG19 weights: set gan.vgg_weights to a local torchvision "
            "VGG19 state-dict file (vgg19-dcbb9e9d.pth) or to 'torchvision' to download them; random weights are "
            "never used for the perceptual loss")
    if weights == "torchvision":
        from torchvision.models import VGG19_Weights
        try:
            return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # offline, proxy, ...
            raise MissingWeightsError(f"could not download VGG19 ImageNet weights via torchvision ({exc}); "
                                      "set gan.vgg_weights to a local file instead") from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"VGG19 weights file not found: {path} (gan.vgg_weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not any(k.startswith("features.") for k in state):
        raise MissingWeightsError(f"{path} is not a torchvision VGG19 state dict (no 'features.*' keys)")
    return state


class VGGPerceptual(nn.Module):
    """Frozen VGG19 feature extractor; ``forward(fake, real)`` = weighted L1 between their ReLU features.

    ``paired=True`` compares each fake with its own real (SPADE: same mask); ``paired=False`` compares the batch
    means of the features, a feature-matching loss in VGG space for unconditional GANs whose fakes have no
    corresponding real image.
    """

    def __init__(self, weights: str | None, paired: bool = True):
        super().__init__()
        features = vgg19().features
        state = {k[len("features."):]: v for k, v in load_vgg19_state(weights).items() if k.startswith("features.")}
        features.load_state_dict(state)  # strict: a partial or mismatched file is an error, not random layers
        self.features = features[:max(LAYER_IDS) + 1].eval().requires_grad_(False)
        self.paired = paired
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # always frozen
        return self

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            x = x[:, :3]
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LAYER_IDS:
                out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        loss = fake.new_zeros(())
        for w, f, r in zip(LAYER_WEIGHTS, self._feats(fake), self._feats(real)):
            r = r.detach()
            if self.paired:
                loss = loss + w * F.l1_loss(f, r)
            else:
                loss = loss + w * F.l1_loss(f.mean(0), r.mean(0))
        return loss

"""Per-image losses for projection (GAN inversion): a distance in a feature space, plus an optional pixel term.

``feature_loss(name, ...)`` builds one:

- ``lpips_vgg16``: LPIPS with the ImageNet VGG16 backbone from a local torchvision ``vgg16`` state dict (the
  StyleGAN2 projector's VGG16 feature distance; :class:`medsynbench.metrics.ppl.LPIPSDistance` loads it and says how
  to provide the file when it is missing: nothing is downloaded);
- any registered feature extractor (``unet_encoder``, ``random_cnn``, ``torchvision:<arch>`` with ``weights_path``,
  ...; :func:`medsynbench.metrics.extractors.get_extractor`): squared L2 between feature vectors divided by their
  dimension (``distance: l2``) or cosine distance (``distance: cosine``). Extractors that quantise their input (the FID
  Inception network takes uint8) cannot pass gradients and are refused.

Every loss maps (generated, target) image batches in [-1, 1] (image channels only) to a [B] tensor, one loss per
image, with no interaction between the images of a batch, so a projection does not depend on how images are batched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class FeatureLoss(torch.nn.Module):
    """Base: ``forward(fake, real) -> [B]``; ``describe()`` names the network and its weights (for records)."""

    def describe(self) -> dict:
        raise NotImplementedError


class LPIPSLoss(FeatureLoss):
    """LPIPS(VGG16), differentiable in ``fake`` (the torchmetrics LPIPS network under a local VGG16 backbone)."""

    def __init__(self, vgg_weights_path: str | None = None, device: str = "cpu"):
        super().__init__()
        from medsynbench.metrics.ppl import LPIPSDistance

        self.lpips = LPIPSDistance(vgg_weights_path).to(device)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.shape[1] == 1:
            fake, real = fake.repeat(1, 3, 1, 1), real.repeat(1, 3, 1, 1)
        if fake.shape[1] != 3:
            raise ValueError(f"LPIPS needs 1- or 3-channel images, got {fake.shape[1]} channels")
        return self.lpips.net(fake.float(), real.float()).flatten()

    def describe(self) -> dict:
        return {**self.lpips.describe(), "distance": "lpips"}


class ExtractorLoss(FeatureLoss):
    """Distance between a registered extractor's features (its own recorded preprocessing first)."""

    def __init__(self, extractor, distance: str = "l2", device: str = "cpu"):
        super().__init__()
        if distance not in ("l2", "cosine"):
            raise ValueError(f"feature distance must be 'l2' or 'cosine', got {distance!r}")
        self.extractor, self.distance, self.device = extractor, distance, device
        extractor._to(device)
        module = getattr(extractor, "net", None) or getattr(extractor, "model", None)
        if module is not None:
            module.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor._forward(self.extractor.preprocess(x)).flatten(1).float()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        f = self.features(fake)
        if fake.requires_grad and not f.requires_grad:
            raise ValueError(f"extractor {self.extractor.name} does not pass gradients to its input (it quantises "
                             "or detaches it); choose another extractor for projection, e.g. lpips_vgg16 or "
                             "unet_encoder")
        with torch.no_grad():
            r = self.features(real)
        if self.distance == "cosine":
            return 1 - F.cosine_similarity(f, r, dim=1, eps=1e-8)
        return (f - r).square().mean(dim=1)

    def describe(self) -> dict:
        d = self.extractor.describe()
        return {"name": d.get("name"), "weights": d.get("weights"), "weights_sha256": d.get("weights_sha256"),
                "preprocessing": d.get("preprocessing"), "distance": self.distance}


def feature_loss(name: str, device: str = "cpu", distance: str = "l2", vgg_weights_path: str | None = None,
                 **extractor_options) -> FeatureLoss:
    """``lpips_vgg16`` or a registered extractor name (with its options and the orchestrator's context keys)."""
    if name == "lpips_vgg16":
        return LPIPSLoss(vgg_weights_path, device=device)
    from medsynbench.metrics.extractors import get_extractor

    return ExtractorLoss(get_extractor(name, device=device, **extractor_options), distance=distance, device=device)


def pixel_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel difference per image ([-1, 1] scale)."""
    return (fake - real).square().flatten(1).mean(dim=1)

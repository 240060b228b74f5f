"""Image + mask pairs as one tensor: GANs without a mask input learn the joint distribution of
image and one-hot mask stacked as channels (empirical study, §3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def stack_pair(images: torch.Tensor, masks: torch.Tensor | None, num_mask_classes: int) -> torch.Tensor:
    """[N,C,H,W] images in [-1,1] + [N,H,W] class masks -> [N, C+K, H, W] in [-1,1]."""
    if masks is None or num_mask_classes == 0:
        return images
    onehot = F.one_hot(masks.long(), num_mask_classes).permute(0, 3, 1, 2).to(images.dtype)
    return torch.cat([images, onehot * 2 - 1], dim=1)


def split_pair(x: torch.Tensor, image_channels: int, num_mask_classes: int):
    """Inverse of :func:`stack_pair`: returns (images, masks or None); masks by argmax over the K channels."""
    images = x[:, :image_channels]
    if num_mask_classes == 0:
        return images, None
    return images, x[:, image_channels:image_channels + num_mask_classes].argmax(dim=1)

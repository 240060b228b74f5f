"""Small torch helpers shared by the GANs, the metrics and the downstream tasks (one copy each): the optimiser factory,
the ImageNet normalisation constants and random flips of image(-mask) batches."""
from __future__ import annotations

import torch

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")

#: torchvision's ImageNet normalisation (on images in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_optimizer(params, optimizer: str, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` take ``betas``; ``rmsprop`` (the original WGAN's choice) and ``sgd`` (with ``momentum``)
    ignore them. Parameters that do not require gradients are left out."""
    params = [p for p in params if p.requires_grad]
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")


def random_flips(images: torch.Tensor, masks: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 vertical: bool = True):
    """Per-sample random horizontal (and, with ``vertical``, vertical) flips, each with probability 1/2; a mask
    ([N, H, W] or stacked as channels of ``images``) moves with its image. Draws from ``generator`` (default: torch's
    global generator, on the images' device). Returns (images, masks)."""
    n = images.shape[0]
    dev = generator.device if generator is not None else images.device
    for dim, on in ((-1, True), (-2, vertical)):
        if not on:
            continue
        flip = torch.rand(n, generator=generator, device=dev).to(images.device) < 0.5
        if flip.any():
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(dim), images)
            if masks is not None:
                masks = torch.where(flip.view(-1, 1, 1), masks.flip(dim), masks)
    return images, masks

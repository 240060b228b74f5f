"""Containers passed between the data layer, the GANs, the metrics and the downstream tasks.

Conventions used across the whole project:
- images: float32 tensor [N, C, H, W] with values in [-1, 1] (after the recorded preprocessing);
- masks: int64 tensor [N, H, W] of class indices (0 = background), or None;
- labels: int64 tensor [N] of class indices, or None.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    images: torch.Tensor
    masks: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.masks is not None and (self.masks.shape[0] != n or self.masks.shape[-2:] != self.images.shape[-2:]):
            raise ValueError(f"masks {tuple(self.masks.shape)} do not match images {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape[0] != n:
            raise ValueError(f"{self.labels.shape[0]} labels for {n} images")
        if self.ids and len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            images=self.images[index],
            masks=None if self.masks is None else self.masks[index],
            labels=None if self.labels is None else self.labels[index],
            ids=[self.ids[i] for i in index.tolist()] if self.ids else [],
        )


@dataclass
class DatasetBundle:
    """Everything a run needs from one dataset config + preprocessing config."""

    name: str
    train: ImageSet              # the (nested, seeded) training subset the GAN trains on
    test: ImageSet               # fixed held-out real test split: the only data downstream scores use
    val: ImageSet | None = None
    num_mask_classes: int = 0    # including background; 0 when the dataset has no masks
    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # preprocessing, file-list hashes, split sizes (recorded)

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

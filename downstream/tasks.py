"""The downstream tasks behind one interface: which targets they need, how to build, train and score a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from medsynbench.types import ImageSet
from medsynbench.downstream import classification, segmentation
from medsynbench.downstream.config import SegmentationSettings, TrainSettings


@dataclass(frozen=True)
class Task:
    name: str
    default_tag: str
    target_name: str                       # "masks" or "labels": what a training/test set must carry
    dense: bool                            # targets are per-pixel (flipped with the image)
    primary: str                           # metric prefix of the main score (used for skip records)
    n_outputs: Callable[[int, int], int]   # (num_mask_classes, num_classes) -> network outputs
    build: Callable[[TrainSettings, int, int], tuple[torch.nn.Module, str]]
    loss: Callable[[TrainSettings], Callable]
    weights_key: str

    def targets(self, data: ImageSet | None) -> torch.Tensor | None:
        return None if data is None else getattr(data, self.target_name)

    def model_name(self, s: TrainSettings) -> str:
        if isinstance(s, SegmentationSettings):
            return f"{s.arch}/{s.encoder}"
        return s.model

    def size_multiple(self, s: TrainSettings) -> int:
        return 2 ** s.encoder_depth if isinstance(s, SegmentationSettings) else 1

    def score(self, s: TrainSettings, logits: torch.Tensor, targets: torch.Tensor, n_out: int) -> list[tuple[str, float]]:
        """[(metric name, value)], all higher-is-better."""
        tag = s.metric_tag or self.default_tag
        if self.dense:
            per_class = segmentation.dice_per_class(logits.argmax(1), targets, n_out, s.dice_aggregation)
            out = [(f"dice_{tag}", float(torch.nanmean(per_class)))]
            if len(per_class) == 1:  # binary: the one foreground class's Dice is dice_<tag> itself
                return out
            return out + [(f"dice_{tag}_class{k + 1}", float(v)) for k, v in enumerate(per_class)]
        scores = classification.classification_scores(logits.softmax(1), targets, n_out)
        return [(f"{key}_{tag}", value) for key, value in scores.items()]


TASKS: dict[str, Task | None] = {
    "none": None,
    "segmentation": Task("segmentation", "unet", "masks", True, "dice", lambda k, c: k, segmentation.build_model,
                         segmentation.loss_fn, "encoder_weights"),
    "classification": Task("classification", "efficientnet", "labels", False, "acc", lambda k, c: c,
                           classification.build_model, classification.loss_fn, "pretrained"),
}

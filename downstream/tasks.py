"""The downstream tasks behind one interface: which targets they need, how to build, train and score a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from medsynbench.types import ImageSet
from medsynbench.downstream import bootstrap, classification, segmentation
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

    def score(self, s: TrainSettings, logits: torch.Tensor, targets: torch.Tensor, n_out: int) -> list[dict]:
        """[{metric, value, ci_low, ci_high, ci_level, ci_method, ...}], all higher-is-better, each with a seeded
        bootstrap CI over the test images (downstream/bootstrap.py). Segmentation: Dice and IoU (mean over the
        foreground classes; per class with more than one); classification: accuracy, balanced accuracy, macro
        one-vs-rest AUC and macro F1."""
        tag = s.metric_tag or self.default_tag
        boot = dict(n_boot=s.ci_n_boot, level=s.ci_level, seed=s.ci_seed)
        if self.dense:
            scores = bootstrap.segmentation_scores(logits.argmax(1).numpy(), targets.numpy(), n_out,
                                                   s.dice_aggregation, **boot)
            order = ["dice", *[f"dice_class{k}" for k in range(1, n_out)], "iou",
                     *[f"iou_class{k}" for k in range(1, n_out)]]
            names = {k: f"{k.split('_')[0]}_{tag}" + (f"_{k.split('_')[1]}" if "_" in k else "") for k in order}
        else:
            scores = bootstrap.classification_scores(logits.float().softmax(1).numpy(), targets.numpy(), **boot)
            order = ["acc", "bacc", "auc", "f1"]
            names = {k: f"{k}_{tag}" for k in order}
        return [{"metric": names[k], **scores[k]} for k in order if k in scores]

    def features(self, model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: str,
                 s: TrainSettings) -> torch.Tensor:
        """The model's encoder features, globally average-pooled ([N, D]): the U-Net encoder's deepest feature map,
        the classifier's pooled pre-logit features (for the feature-space maps)."""
        from medsynbench.downstream.training import pad_to_multiple
        model.to(device).eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].float().to(device)
                if self.dense:
                    f = model.encoder(pad_to_multiple(x, self.size_multiple(s)))[-1].mean(dim=(2, 3))
                else:
                    f = model.forward_head(model.forward_features(x), pre_logits=True)
                out.append(f.float().cpu())
        return torch.cat(out)


TASKS: dict[str, Task | None] = {
    "none": None,
    "segmentation": Task("segmentation", "unet", "masks", True, "dice", lambda k, c: k, segmentation.build_model,
                         segmentation.loss_fn, "encoder_weights"),
    "classification": Task("classification", "efficientnet", "labels", False, "acc", lambda k, c: c,
                           classification.build_model, classification.loss_fn, "pretrained"),
}

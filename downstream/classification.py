"""Classification downstream task: a timm EfficientNet trained on (real | synthetic | both) labelled images, scored by
accuracy, balanced accuracy and macro AUC on the real test split."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from medsynbench.downstream.config import ClassificationSettings
from medsynbench.downstream.weights import RANDOM_INIT, offline_error, require_file, sha256_file, state_sha256, weights_kind


def build_model(s: ClassificationSettings, in_channels: int, num_classes: int) -> tuple[torch.nn.Module, str]:
    """(model, weights description). With weights, timm adapts the first conv to ``in_channels`` and drops the
    ImageNet classifier when ``num_classes`` differs."""
    kind = weights_kind(s.pretrained)
    kwargs = dict(num_classes=num_classes, in_chans=in_channels, drop_rate=s.drop_rate)
    if kind == "random":
        return timm.create_model(s.model, pretrained=False, **kwargs), RANDOM_INIT
    if kind == "imagenet":
        try:
            model = timm.create_model(s.model, pretrained=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - network / hub errors of any type
            raise offline_error(f"ImageNet weights for timm model {s.model!r}", "pretrained", err) from err
        return model, f"imagenet (timm {s.model}) state-sha256:{state_sha256(model)}"
    path = require_file(s.pretrained, "pretrained")
    model = timm.create_model(s.model, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    return model, f"{path} sha256:{sha256_file(path)}"


def loss_fn(s: ClassificationSettings):
    return lambda logits, labels: F.cross_entropy(logits, labels)


def classification_scores(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy, balanced accuracy (= macro recall) and macro one-vs-rest AUC, via torchmetrics."""
    acc = MulticlassAccuracy(num_classes=num_classes, average="micro")(probs, labels)
    bacc = MulticlassAccuracy(num_classes=num_classes, average="macro")(probs, labels)
    auc = MulticlassAUROC(num_classes=num_classes, average="macro")(probs, labels)
    return {"acc": float(acc), "bacc": float(bacc), "auc": float(auc)}

"""Segmentation downstream task: an smp U-Net trained on (real | synthetic | both) image-mask pairs, scored by Dice
on the real test split."""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torchmetrics.segmentation import DiceScore

from medsynbench.downstream.config import SegmentationSettings
from medsynbench.downstream.weights import (RANDOM_INIT, load_state_dict_file, offline_error, require_file, sha256_file,
                                state_sha256, weights_kind, WeightsUnavailableError)


def build_model(s: SegmentationSettings, in_channels: int, num_classes: int) -> tuple[torch.nn.Module, str]:
    """(model, weights description). ``num_classes`` includes background."""
    kind = weights_kind(s.encoder_weights)
    kwargs = dict(arch=s.arch, encoder_name=s.encoder, encoder_depth=s.encoder_depth, classes=num_classes,
                  decoder_channels=list(s.decoder_channels)[: s.encoder_depth])
    if kind == "random":
        return smp.create_model(encoder_weights=None, in_channels=in_channels, **kwargs), RANDOM_INIT
    if kind == "imagenet":
        try:
            model = smp.create_model(encoder_weights="imagenet", in_channels=in_channels, **kwargs)
        except KeyError:
            raise
        except Exception as err:  # noqa: BLE001 - network / hub errors of any type
            raise offline_error(f"ImageNet weights for encoder {s.encoder!r} (segmentation_models_pytorch)",
                                "encoder_weights", err) from err
        return model, f"imagenet (smp {s.encoder}) state-sha256:{state_sha256(model.encoder)}"
    path = require_file(s.encoder_weights, "encoder_weights")
    # Built for 3 channels like the file, then the first conv is adapted to the data's channels (as smp does).
    model = smp.create_model(encoder_weights=None, in_channels=3, **kwargs)
    state = load_state_dict_file(path)
    state = {k.removeprefix("encoder."): v for k, v in state.items() if not k.startswith(("decoder.", "segmentation_head."))}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}  # ImageNet heads
    expected = model.encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise WeightsUnavailableError(f"weights file {path} does not fit encoder {s.encoder!r}: missing {missing[:5]}, "
                                      f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.encoder.load_state_dict(state)
    if in_channels != 3:
        model.encoder.set_in_channels(in_channels, pretrained=True)
    return model, f"{path} sha256:{sha256_file(path)}"


def loss_fn(s: SegmentationSettings):
    dice = smp.losses.DiceLoss(mode="multiclass") if s.dice_loss else None

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(logits, masks)
        return value + dice(logits, masks) if dice is not None else value
    return loss


def dice_per_class(preds: torch.Tensor, targets: torch.Tensor, num_classes: int,
                   aggregation: str = "samplewise") -> torch.Tensor:
    """Foreground Dice per class (classes 1..K-1) for index masks [N,H,W], via torchmetrics.

    samplewise: Dice per image then mean over images; an image where a class is absent from both prediction and
    target does not count for that class (0/0), one with false positives only counts as 0.
    """
    metric = DiceScore(num_classes=num_classes, include_background=False, average="none",
                       aggregation_level=aggregation, input_format="index")
    metric.update(preds.long(), targets.long())
    return metric.compute().reshape(-1)

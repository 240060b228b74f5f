"""Sanity check on real data: a U-Net trained on a small ISIC subset with the default CPU config beats an untrained
one by a wide margin on the real test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from medsynbench.benchmark.data.types import ImageSet
from medsynbench.downstream import run_downstream

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ISIC = SHARED / "data" / "isic2018-task1-256"
CONF = Path(__file__).resolve().parents[1] / "conf" / "downstream"


def _load(split: str, n: int, size: int = 64) -> ImageSet:
    ids = (ISIC / f"split_{split}.txt").read_text().split()[:n]
    images = [np.asarray(Image.open(ISIC / "images" / f"{i}.jpg").convert("RGB").resize((size, size), Image.BILINEAR))
              for i in ids]
    masks = [np.asarray(Image.open(ISIC / "masks" / f"{i}_segmentation.png").convert("L")
                        .resize((size, size), Image.NEAREST)) > 127 for i in ids]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return ImageSet(x, masks=torch.from_numpy(np.stack(masks)).long(), ids=ids)


@pytest.mark.slow
@pytest.mark.shared_data
def test_unet_trained_on_real_isic_beats_untrained():
    if not ISIC.is_dir():
        pytest.skip(f"ISIC 2018 data not available: {ISIC} is absent (only in the project's build environment)")
    train, test = _load("train", 160), _load("test", 64)
    cfg = OmegaConf.load(CONF / "unet_seg.yaml")
    cfg.progress = False
    trained = run_downstream(cfg, train, None, test, 2, 0, "cpu", seed=0, train_on=("real",))
    cfg.steps = 0
    untrained = run_downstream(cfg, train, None, test, 2, 0, "cpu", seed=0, train_on=("real",))
    dice, dice0 = trained[0]["value"], untrained[0]["value"]
    assert trained[0]["metric"] == "dice_unet" and trained[0]["n_test"] == 64
    assert dice > 0.75 and dice > dice0 + 0.3, (dice, dice0)

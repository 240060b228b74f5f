"""Typed settings of the ``downstream`` Hydra group.

The group is ``Any`` in the run schema (each task has its own keys), so it is validated here: an unknown or
misspelt key raises with the list of valid keys, instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

# Training-data scenarios; real_augmented = the real training split with classic augmentation (downstream/augment.py);
# real_balanced = the real training split plus synthetic images of the minority classes from a class-conditional GAN,
# until every class has balance_ratio x the majority class's count (downstream/synthetic.py)
TRAIN_ON = ("real", "synthetic", "real+synthetic", "real_augmented", "real_balanced")
# scenarios that do not depend on the GAN: computed once per (data content, train size, seed, task settings), cached
GAN_INDEPENDENT = ("real", "real_augmented")
DEFAULT_TRAIN_ON = ("real", "synthetic", "real+synthetic")  # train_on: null


@dataclass
class AugmentSettings:
    """``downstream.augment``: the classic augmentation of the ``real_augmented`` scenario (per image, online)."""

    hflip: float = 0.5                      # probability of a horizontal flip
    vflip: float = 0.5                      # probability of a vertical flip
    degrees: float = 15.0                   # random rotation in [-degrees, degrees]
    translate: float = 0.05                 # random shift, fraction of the image size (each axis)
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])  # random zoom range [low, high]
    brightness: float = 0.1                 # ColorJitter brightness factor range [1 - b, 1 + b] (image only)
    contrast: float = 0.1                   # ColorJitter contrast factor range [1 - c, 1 + c] (image only)
    elastic_alpha: float = 0.0              # ElasticTransform displacement magnitude in pixels (0 = off)
    elastic_sigma: float = 5.0              # ... smoothness of the displacement field (Gaussian sigma, pixels)
    elastic_p: float = 0.5                  # ... probability per image (when elastic_alpha > 0)

    def __post_init__(self):
        self.scale = list(self.scale)
        problems = []
        for key in ("hflip", "vflip", "elastic_p"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                problems.append(f"downstream.augment.{key}={getattr(self, key)} must be a probability in [0, 1]")
        for key in ("degrees", "brightness", "contrast", "elastic_alpha"):
            if getattr(self, key) < 0:
                problems.append(f"downstream.augment.{key}={getattr(self, key)} must be >= 0")
        if self.elastic_sigma <= 0:
            problems.append(f"downstream.augment.elastic_sigma={self.elastic_sigma} must be > 0")
        if not 0.0 <= self.translate < 1.0:
            problems.append(f"downstream.augment.translate={self.translate} must be in [0, 1)")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            problems.append(f"downstream.augment.scale={self.scale} must be [low, high] with 0 < low <= high")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class MapsSettings:
    """``downstream.maps``: UMAP / t-SNE maps of real vs synthetic images per run (benchmark/maps.py)."""

    enabled: bool = False                   # off by default: UMAP's first call compiles (numba), ~10-30 s on a CPU
    methods: list[str] = field(default_factory=lambda: ["umap", "tsne"])
    extractor: Optional[str] = None         # a metrics.extractors name; null = the first one
    task_encoder: bool = True               # also the downstream model's encoder space (trained on real data)
    max_points: int = 500                   # per side (real test / synthetic), a seeded subsample above it
    seed: int = 0

    def __post_init__(self):
        self.methods = list(self.methods)
        bad = sorted(set(self.methods) - {"umap", "tsne"})
        if bad:
            raise ValueError(f"downstream.maps.methods: {bad} not known; choose from ['tsne', 'umap']")
        if self.max_points < 5:
            raise ValueError(f"downstream.maps.max_points={self.max_points} must be >= 5")


@dataclass
class TrainSettings:
    """What every downstream task shares: how long and how to train, and how much synthetic data to use."""

    task: str = "none"
    metric_tag: str = ""                  # suffix of the metric names, e.g. dice_<tag>; empty = task default
    steps: Optional[int] = 150            # optimiser steps; the same for every train_on so conditions get equal compute
    epochs: Optional[int] = None          # alternative to steps (set steps: null); steps = epochs * ceil(n / batch)
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"               # adam | adamw | sgd
    weight_decay: float = 0.0
    augment_flip: bool = True             # random horizontal + vertical flips (masks flipped with their image)
    synthetic_n: Optional[int] = None     # synthetic images used when train_on=synthetic; null = all provided
    mix_ratio: float = 1.0                # real+synthetic: synthetic images added per real image
    mix_n: Optional[int] = None           # real+synthetic: absolute number of synthetic images (overrides mix_ratio)
    train_on: Optional[list[str]] = None  # null = the caller's choice (default: real, synthetic, real+synthetic)
    augment: AugmentSettings = field(default_factory=AugmentSettings)  # the real_augmented scenario's augmentation
    progress: bool = True                 # tqdm bar while training
    # real_balanced: each class is filled with synthetic images (class-conditional GAN) up to ratio x majority count
    balance_ratio: float = 1.0
    # synthetic training sets are sampled in chunks of this many images; sets above synthetic_ram_mb (float32) are
    # kept on disk (a float16 memory map) instead of in memory, so 10,000 pairs at 256 px fit a small machine
    synthetic_chunk: int = 1024
    synthetic_ram_mb: float = 2048.0
    # validation + early stopping: val_fraction of the REAL training split (seeded, never the test split) is held out
    # for every scenario; the model is scored on it (loss) every val_every steps (null = once per epoch of the
    # scenario's training set); the best weights are restored; training stops after `patience` validations without
    # improvement (null = runs all steps). val_fraction 0 = no validation (the last weights are scored).
    val_fraction: float = 0.0
    val_every: Optional[int] = None
    patience: Optional[int] = None
    min_delta: float = 0.0
    # bootstrap CI of every score over the test images (percentile, seeded)
    ci_n_boot: int = 2000
    ci_level: float = 0.95
    ci_seed: int = 0
    cache: bool = True                    # real / real_augmented scores cached by content, reused by every GAN
    maps: MapsSettings = field(default_factory=MapsSettings)  # UMAP / t-SNE maps of real vs synthetic

    def total_steps(self, n_train: int) -> tuple[int, Optional[int]]:
        """(steps, epochs) for a training set of n_train images."""
        if self.epochs is not None:
            per_epoch = -(-n_train // min(self.batch_size, n_train))
            return self.epochs * per_epoch, self.epochs
        return int(self.steps), None


@dataclass
class NoneSettings(TrainSettings):
    pass


@dataclass
class SegmentationSettings(TrainSettings):
    task: str = "segmentation"
    arch: str = "Unet"                    # any segmentation_models_pytorch architecture (smp.create_model)
    encoder: str = "resnet18"
    encoder_depth: int = 5
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    encoder_weights: Optional[str] = None  # null = random init | imagenet | /path/to/encoder_state_dict.pth
    dice_loss: bool = True                # loss = cross-entropy (+ Dice loss)
    dice_aggregation: str = "samplewise"  # samplewise: Dice per test image, then mean | global: over all pixels


@dataclass
class ClassificationSettings(TrainSettings):
    task: str = "classification"
    model: str = "efficientnet_b0"        # any timm model name
    pretrained: Any = False               # false = random init | true / imagenet | /path/to/timm_checkpoint.pth
    drop_rate: float = 0.0


SETTINGS = {"none": NoneSettings, "segmentation": SegmentationSettings, "classification": ClassificationSettings}


def settings_class(raw) -> type[TrainSettings]:
    """The settings dataclass (the schema) of a ``downstream`` mapping, chosen by its ``task`` key."""
    task = raw.get("task", "none" if not raw else None)
    if task not in SETTINGS:
        raise ValueError(f"downstream.task={task!r} is not a known task; choose one of {sorted(SETTINGS)}")
    return SETTINGS[task]


def parse_settings(task_cfg) -> TrainSettings:
    """DictConfig / dict of the ``downstream`` group -> the task's settings dataclass (unknown keys raise)."""
    if task_cfg is None:
        return NoneSettings()
    if isinstance(task_cfg, TrainSettings):
        return task_cfg
    raw = OmegaConf.to_container(task_cfg, resolve=True) if isinstance(task_cfg, DictConfig) else dict(task_cfg)
    cls = settings_class(raw)
    task = cls().task
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ValueError(f"downstream ({task}): unknown key(s) {unknown}; valid keys are {sorted(valid)}")
    for key, sub in (("augment", AugmentSettings), ("maps", MapsSettings)):
        if isinstance(raw.get(key), dict):
            sub_valid = {f.name for f in dataclasses.fields(sub)}
            sub_unknown = sorted(set(raw[key]) - sub_valid)
            if sub_unknown:
                raise ValueError(f"downstream.{key} ({task}): unknown key(s) {sub_unknown}; valid keys are "
                                 f"{sorted(sub_valid)}")
            raw[key] = sub(**raw[key])
        elif raw.get(key, None) is None:
            raw.pop(key, None)
    settings = cls(**raw)
    _check(settings)
    return settings


def _check(s: TrainSettings) -> None:
    if (s.steps is None) == (s.epochs is None) and s.task != "none":
        raise ValueError(f"downstream: set exactly one of steps / epochs (got steps={s.steps}, epochs={s.epochs})")
    if s.optimizer not in ("adam", "adamw", "sgd"):
        raise ValueError(f"downstream.optimizer={s.optimizer!r}; choose adam, adamw or sgd")
    if s.batch_size < 2:
        raise ValueError("downstream.batch_size must be >= 2 (batch-norm layers need more than one image)")
    if s.mix_ratio < 0 or (s.mix_n is not None and s.mix_n < 0) or (s.synthetic_n is not None and s.synthetic_n < 1):
        raise ValueError("downstream: mix_ratio / mix_n must be >= 0 and synthetic_n >= 1")
    for name in s.train_on or []:
        if name not in TRAIN_ON:
            raise ValueError(f"downstream.train_on: {name!r} is not one of {TRAIN_ON}")
    if s.balance_ratio <= 0 or s.balance_ratio > 1:
        raise ValueError(f"downstream.balance_ratio={s.balance_ratio} must be in (0, 1] (1 = fully balanced)")
    if s.synthetic_chunk < 1 or s.synthetic_ram_mb <= 0:
        raise ValueError("downstream.synthetic_chunk must be >= 1 and downstream.synthetic_ram_mb > 0")
    if not 0.0 <= s.val_fraction < 1.0:
        raise ValueError(f"downstream.val_fraction={s.val_fraction} must be in [0, 1)")
    if (s.patience is not None or s.val_every is not None) and s.val_fraction == 0 and s.task != "none":
        raise ValueError("downstream.patience / val_every need a validation split: set downstream.val_fraction > 0 "
                         "(e.g. 0.1 of the real training split)")
    if (s.patience is not None and s.patience < 1) or (s.val_every is not None and s.val_every < 1):
        raise ValueError("downstream.patience and downstream.val_every must be >= 1 (or null)")
    if s.ci_n_boot < 0 or not 0 < s.ci_level < 1:
        raise ValueError(f"downstream.ci_n_boot={s.ci_n_boot} must be >= 0 (0 = no CI) and ci_level={s.ci_level} "
                         "in (0, 1)")
    if isinstance(s, SegmentationSettings) and s.dice_aggregation not in ("samplewise", "global"):
        raise ValueError(f"downstream.dice_aggregation={s.dice_aggregation!r}; choose samplewise or global")

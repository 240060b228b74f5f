"""``run_downstream``: train a task model on real, synthetic and real+synthetic data; always score on real test data."""
from __future__ import annotations

import dataclasses
import logging
import time

import torch

from medsynbench.types import ImageSet
from medsynbench.downstream.config import DEFAULT_TRAIN_ON, TRAIN_ON, TrainSettings, parse_settings
from medsynbench.downstream.augment import Augmenter
from medsynbench.downstream.tasks import TASKS, Task
from medsynbench.downstream.training import fit, predict
from medsynbench.downstream.weights import weights_kind

log = logging.getLogger(__name__)


def list_tasks() -> list[str]:
    return sorted(TASKS)


def synthetic_needed(s: TrainSettings, n_real_train: int, conditions=TRAIN_ON) -> dict[str, int]:
    """Synthetic images each ``train_on`` condition trains on (0 for ``real``), from the settings and the real
    training set's size alone: ``synthetic`` takes ``synthetic_n`` (null = as many as the real training images, an
    equal-size comparison with ``real``), ``real+synthetic`` adds ``mix_n``, else ``mix_ratio`` per real image."""
    out = {}
    for condition in conditions:
        parts = condition.split("+")
        if "synthetic" not in parts:
            out[condition] = 0
        elif "real" not in parts:
            out[condition] = n_real_train if s.synthetic_n is None else int(s.synthetic_n)
        else:
            out[condition] = int(s.mix_n) if s.mix_n is not None else int(round(s.mix_ratio * n_real_train))
    return out


def planned_synthetic(task_cfg, n_real_train: int, train_on=None) -> dict[str, int]:
    """Synthetic images :func:`run_downstream` will train on per condition with these settings (empty without a
    task): what a caller should sample for the downstream tasks, independently of any metric sample count."""
    s = parse_settings(task_cfg)
    if TASKS[s.task] is None:
        return {}
    return synthetic_needed(s, n_real_train, tuple(train_on or s.train_on or DEFAULT_TRAIN_ON))


def _training_set(task: Task, s: TrainSettings, train_on: str, real: ImageSet, synthetic: ImageSet | None, seed: int):
    """(images, targets, n_real, n_synthetic) or a skip reason (str)."""
    what = task.target_name
    parts, n_real, n_syn = [], 0, 0
    if "real" in train_on.split("+") or train_on == "real_augmented":  # augmented per batch in fit()
        if task.targets(real) is None:
            return f"the real training set has no {what}"
        parts.append((real.images, task.targets(real)))
        n_real = len(real)
    if "synthetic" in train_on.split("+"):
        if synthetic is None or len(synthetic) == 0:
            return "no synthetic images were given"
        if task.targets(synthetic) is None:
            source = "image-mask pairs" if task.dense else "a class-conditional GAN"
            return f"the synthetic images carry no {what} (needs {source})"
        wanted = synthetic_needed(s, len(real), (train_on,))[train_on]
        n_syn = min(wanted, len(synthetic))
        if n_syn < wanted:
            log.warning("downstream %s on %s: %d synthetic images wanted, only %d given", task.name, train_on, wanted,
                        len(synthetic))
        # Which synthetic images: a seeded random choice (the sample order of a GAN carries no meaning).
        pick = torch.randperm(len(synthetic), generator=torch.Generator().manual_seed(seed + 17))[:n_syn]
        if n_syn:
            parts.append((synthetic.images[pick], task.targets(synthetic)[pick]))
    if n_real + n_syn < 2:
        return f"{n_real + n_syn} training image(s); at least 2 are needed"
    images = torch.cat([p[0] for p in parts]).float()
    targets = torch.cat([p[1] for p in parts]).long()
    return images, targets, n_real, n_syn


def _normalise(images: torch.Tensor, weights: str) -> torch.Tensor:
    """Pretrained (ImageNet) weights expect ImageNet-normalised input; random init takes the [-1,1] images as is."""
    if weights_kind(weights) == "random":
        return images
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    c = images.shape[1]
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN if c == 3 else [sum(IMAGENET_DEFAULT_MEAN) / 3] * c)
    std = torch.tensor(IMAGENET_DEFAULT_STD if c == 3 else [sum(IMAGENET_DEFAULT_STD) / 3] * c)
    return ((images + 1) / 2 - mean[:, None, None]) / std[:, None, None]


def _check_inputs(task: Task, real_train: ImageSet, synthetic: ImageSet | None, real_test: ImageSet, n_out: int):
    if synthetic is not None and synthetic.images.shape[1:] != real_train.images.shape[1:]:
        raise ValueError(f"downstream: synthetic images {tuple(synthetic.images.shape[1:])} differ from real "
                         f"{tuple(real_train.images.shape[1:])} (channels/size must match)")
    for name, data in (("real_train", real_train), ("synthetic", synthetic), ("real_test", real_test)):
        targets = task.targets(data)
        if targets is not None and len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= n_out):
            raise ValueError(f"downstream: {name} {task.target_name} hold values in [{int(targets.min())}, "
                             f"{int(targets.max())}] but the task has {n_out} classes")


def run_downstream(task_cfg, real_train: ImageSet, synthetic: ImageSet | None, real_test: ImageSet,
                   num_mask_classes: int, num_classes: int, device: str = "cpu", seed: int = 0,
                   train_on=None) -> list[dict]:
    """One model per ``train_on`` condition, each scored on ``real_test``; returns one record per metric.

    ``train_on`` defaults to ``task_cfg.train_on``, else ("real", "synthetic", "real+synthetic"); ``real_augmented``
    trains on the real split with classic augmentation (``downstream.augment``, downstream/augment.py). A condition whose
    data lack targets (no synthetic masks/labels, ...) yields a record with ``skipped: True`` and a ``reason``.
    Every condition starts from the same seeded initialisation and sees the same number of steps.
    """
    s = parse_settings(task_cfg)
    task = TASKS[s.task]
    if task is None:
        return []
    conditions = tuple(train_on or s.train_on or DEFAULT_TRAIN_ON)
    for name in conditions:
        if name not in TRAIN_ON:
            raise ValueError(f"downstream: train_on {name!r} is not one of {TRAIN_ON}")
    n_out = task.n_outputs(num_mask_classes, num_classes)
    tag = s.metric_tag or task.default_tag
    base = {"task": task.name, "model": task.model_name(s), "seed": seed, "n_test": len(real_test),
            "batch_size": s.batch_size, "lr": s.lr, "optimizer": s.optimizer, "augment_flip": s.augment_flip}

    test_targets = task.targets(real_test)
    skip_all = None
    if n_out < 2:
        skip_all = f"the dataset has {n_out} {task.target_name[:-1]} classes; {task.name} needs at least 2"
    elif test_targets is None:
        skip_all = f"the real test split has no {task.target_name}"
    else:
        _check_inputs(task, real_train, synthetic, real_test, n_out)

    records = []
    weights_spec = getattr(s, task.weights_key)
    test_images = None if skip_all else _normalise(real_test.images.float(), weights_spec)
    for condition in conditions:
        data = skip_all or _training_set(task, s, condition, real_train, synthetic, seed)
        if isinstance(data, str):
            log.warning("downstream %s on %s skipped: %s", task.name, condition, data)
            records.append({**base, "metric": f"{task.primary}_{tag}", "value": None, "higher_is_better": True,
                            "train_on": condition, "n_train_real": None, "n_train_synthetic": None,
                            "weights": None, "steps": None, "epochs": None, "seconds": 0.0,
                            "skipped": True, "reason": data})
            continue
        images, targets, n_real, n_syn = data
        # real_augmented: the [-1, 1] images are augmented per batch, then normalised for the weights
        augment = (Augmenter(s.augment, normalise=lambda x: _normalise(x, weights_spec))
                   if condition == "real_augmented" else None)
        steps, epochs = s.total_steps(len(images))
        log.info("downstream %s@%s: training %s on %d real + %d synthetic images, %d steps", task.name, condition,
                 task.model_name(s), n_real, n_syn, steps)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's global RNG
            torch.manual_seed(seed)
            model, weights = task.build(s, images.shape[1], n_out)
            inputs = images if augment is not None else _normalise(images, weights_spec)
            final_loss = fit(model, task.loss(s), inputs, targets, s, steps, seed, device,
                             dense_targets=task.dense, multiple=task.size_multiple(s),
                             desc=f"{task.name}@{condition}", augment=augment)
        logits = predict(model, test_images, s.eval_batch_size, device, task.size_multiple(s))
        scores = task.score(s, logits, test_targets, n_out)
        seconds = time.perf_counter() - t0
        log.info("downstream %s@%s: %s (%.1f s)", task.name, condition,
                 ", ".join(f"{m}={v:.4f}" for m, v in scores[:1]), seconds)
        for metric, value in scores:
            records.append({**base, "metric": metric, "value": value, "higher_is_better": True,
                            "train_on": condition, "n_train_real": n_real, "n_train_synthetic": n_syn,
                            "weights": weights, "steps": steps, "epochs": epochs, "final_train_loss": final_loss,
                            "seconds": seconds,
                            **({"augment": dataclasses.asdict(s.augment)} if augment is not None else {})})
        del model
    return records

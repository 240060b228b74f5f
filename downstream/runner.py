"""``run_downstream``: train a task model on real, synthetic and real+synthetic data; always score on real test data."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import torch

from medsynbench.types import ImageSet
from medsynbench.downstream.config import DEFAULT_TRAIN_ON, GAN_INDEPENDENT, TRAIN_ON, TrainSettings, parse_settings
from medsynbench.downstream.augment import FLIPS_ONLY, NO_AUGMENTATION, Augmenter
from medsynbench.downstream.cache import ScenarioCache, data_digest, scenario_key
from medsynbench.downstream.synthetic import ConcatImages, balancing_plan, gather, validation_split
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


def planned_balancing(task_cfg, real_train: ImageSet, num_classes: int, seed: int, train_on=None) -> dict[int, int]:
    """Synthetic images per class the ``real_balanced`` condition adds (empty when it is not run or the data have
    no labels): what a caller samples from a class-conditional GAN (:func:`synthetic.plan_labels`). Computed on the
    real images the models train on (the training split less the validation split, as :func:`run_downstream`)."""
    s = parse_settings(task_cfg)
    if TASKS[s.task] is None or "real_balanced" not in (train_on or s.train_on or DEFAULT_TRAIN_ON):
        return {}
    if real_train.labels is None or num_classes < 2:
        return {}
    labels = real_train.labels
    if s.val_fraction > 0:
        labels = labels[validation_split(len(real_train), s.val_fraction, seed)[0]]
    return balancing_plan(labels, num_classes, s.balance_ratio)


def _cat(parts: list):
    """One tensor when every part is in memory, else a lazy concatenation (rows read per batch)."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return ConcatImages(parts)


def _training_set(task: Task, s: TrainSettings, train_on: str, real: ImageSet, synthetic: ImageSet | None, seed: int,
                  num_classes: int = 0, balance_pool: ImageSet | None = None):
    """(images, targets, n_real, n_synthetic, extra record fields) or a skip reason (str)."""
    what = task.target_name
    parts, n_real, n_syn, extra = [], 0, 0, {}
    parts_of = train_on.split("+")
    if "real" in parts_of or train_on in ("real_augmented", "real_balanced"):  # augmented per batch in fit()
        if task.targets(real) is None:
            return f"the real training set has no {what}"
        parts.append((real.images, task.targets(real)))
        n_real = len(real)
    if train_on == "real_balanced":
        pool = balance_pool if balance_pool is not None else synthetic
        if real.labels is None or num_classes < 2:
            return "class balancing needs class labels in the real training split"
        if pool is None or len(pool) == 0:
            return "no synthetic images were given (class balancing needs a class-conditional GAN)"
        if pool.labels is None:
            return "the synthetic images carry no class labels (class balancing needs a class-conditional GAN)"
        if task.targets(pool) is None:
            return f"the synthetic images carry no {what} (needs image-mask pairs with class labels)"
        plan = balancing_plan(real.labels, num_classes, s.balance_ratio)
        g = torch.Generator().manual_seed(seed + 19)
        picks, short = [], {}
        for k, need in plan.items():
            have = torch.nonzero(pool.labels == k).flatten()
            have = have[torch.randperm(len(have), generator=g)]
            if len(have) < need:
                short[k] = (need, len(have))
            picks.append(have[:need])
        if short:
            log.warning("downstream %s on real_balanced: too few synthetic images of class(es) %s (wanted, given)",
                        task.name, short)
        pick = torch.cat(picks).sort().values if picks else torch.empty(0, dtype=torch.long)
        n_syn = len(pick)
        if n_syn:
            parts.append((gather(pool.images, pick), gather(task.targets(pool), pick)))
        real_counts = torch.bincount(real.labels.long(), minlength=num_classes)
        syn_counts = torch.bincount(pool.labels[pick].long(), minlength=num_classes)
        extra = {"balance": {"ratio": s.balance_ratio, "class_counts_real": real_counts.tolist(),
                             "class_counts_synthetic": syn_counts.tolist(),
                             "class_counts_train": (real_counts + syn_counts).tolist(),
                             "planned": [plan[k] for k in range(num_classes)],
                             "short": {str(k): v for k, v in short.items()}}}
    elif "synthetic" in parts_of:
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
            parts.append((gather(synthetic.images, pick), gather(task.targets(synthetic), pick)))
    if n_real + n_syn < 2:
        return f"{n_real + n_syn} training image(s); at least 2 are needed"
    images = _cat([p[0] for p in parts])
    targets = _cat([p[1] for p in parts])
    if isinstance(images, torch.Tensor):
        images = images.float()
    if isinstance(targets, torch.Tensor):
        targets = targets.long()
    return images, targets, n_real, n_syn, extra


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
                   train_on=None, balance_synthetic: ImageSet | None = None, cache_dir=None,
                   models_out: dict | None = None) -> list[dict]:
    """One model per ``train_on`` condition, each scored on ``real_test``; returns one record per metric.

    ``train_on`` defaults to ``task_cfg.train_on``, else ("real", "synthetic", "real+synthetic"); ``real_augmented``
    trains on the real split with classic augmentation (``downstream.augment``, downstream/augment.py);
    ``real_balanced`` adds synthetic images of the minority classes (from ``balance_synthetic``, else ``synthetic``;
    labelled by a class-conditional GAN) until the classes are balanced (``downstream.balance_ratio``).
    A condition whose data lack targets (no synthetic masks/labels, ...) yields a record with ``skipped: True`` and a
    ``reason``. Every condition starts from the same seeded initialisation and sees the same (maximum) number of
    steps; with ``val_fraction`` > 0 a seeded part of the real training split is held out for validation in every
    condition, and the best weights on it are scored. Every score carries a bootstrap CI over the test images.
    With ``cache_dir`` the GAN-independent conditions (real, real_augmented) are read from / written to a cache keyed
    by the data's content, the seed and the settings (downstream/cache.py). ``models_out`` (a dict), when given,
    receives the model trained on ``real`` (for the feature-space maps).
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
        if balance_synthetic is not None:
            _check_inputs(task, real_train, balance_synthetic, real_test, n_out)

    records = []
    weights_spec = getattr(s, task.weights_key)
    normalise = lambda x: _normalise(x, weights_spec)  # noqa: E731
    test_images = None if skip_all else normalise(real_test.images.float())
    # validation: a seeded part of the REAL training split, held out in every condition (never the test split)
    real_fit, val, n_val = real_train, None, 0
    if s.val_fraction > 0 and not skip_all and task.targets(real_train) is not None:
        fit_idx, val_idx = validation_split(len(real_train), s.val_fraction, seed)
        real_fit, held = real_train.subset(fit_idx), real_train.subset(val_idx)
        val, n_val = (normalise(held.images.float()), task.targets(held).long()), len(held)
    cache = ScenarioCache(cache_dir) if (cache_dir is not None and s.cache and not skip_all) else None
    digests = {}
    for condition in conditions:
        data = skip_all or _training_set(task, s, condition, real_fit, synthetic, seed, num_classes, balance_synthetic)
        if isinstance(data, str):
            log.warning("downstream %s on %s skipped: %s", task.name, condition, data)
            records.append({**base, "metric": f"{task.primary}_{tag}", "value": None, "higher_is_better": True,
                            "train_on": condition, "n_train_real": None, "n_train_synthetic": None,
                            "weights": None, "steps": None, "epochs": None, "seconds": 0.0,
                            "skipped": True, "reason": data})
            continue
        t0 = time.perf_counter()
        key = None
        if cache is not None and condition in GAN_INDEPENDENT:
            if not digests:
                digests = {"train": data_digest(real_train, task.target_name),
                           "test": data_digest(real_test, task.target_name)}
            key = scenario_key(s, condition, digests["train"], digests["test"], len(real_train), n_out, seed, device)
        want_model = models_out is not None and condition == "real"
        with (cache.locked(key) if key is not None else contextlib.nullcontext()):
            hit = cache.get(key, need_model=want_model) if key is not None else None
            if hit is not None:
                cached, state = hit
                seconds = time.perf_counter() - t0
                log.info("downstream %s@%s: cache hit (%s)", task.name, condition, cache.paths(key)[0].name)
                records += [{**r, "seconds": seconds, "cache_hit": True} for r in cached]
                if want_model:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        model, _ = task.build(s, real_train.images.shape[1], n_out)
                    model.load_state_dict(state)
                    models_out[condition] = model
                continue
            new, model = _train_and_score(task, s, condition, data, seed, device, n_out, tag, base, normalise,
                                          test_images, test_targets, val, n_val, t0)
            if key is not None:
                new = [{**r, "cache_key": cache.paths(key)[0].stem} for r in new]
                cache.put(key, [{k: v for k, v in r.items() if k != "cache_hit"} for r in new],
                          model if want_model else None)
            records += new
            if want_model:
                models_out[condition] = model.cpu()
            del model
    return records


def _train_and_score(task: Task, s: TrainSettings, condition: str, data, seed: int, device: str, n_out: int,
                     tag: str, base: dict, normalise, test_images, test_targets, val, n_val: int, t0: float):
    images, targets, n_real, n_syn, extra = data
    # the [-1, 1] images are augmented per batch (real_augmented: classic augmentation; otherwise the augment_flip
    # flips, or nothing), then normalised for the weights
    settings = s.augment if condition == "real_augmented" else (FLIPS_ONLY if s.augment_flip else NO_AUGMENTATION)
    augment = Augmenter(settings, normalise=normalise)
    steps, epochs = s.total_steps(len(images))
    log.info("downstream %s@%s: training %s on %d real + %d synthetic images, %d steps%s", task.name, condition,
             task.model_name(s), n_real, n_syn, steps, f", validating on {n_val} real training images" if val else "")
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model, weights = task.build(s, images.shape[1], n_out)
        info = fit(model, task.loss(s), images, targets, s, steps, seed, device, dense_targets=task.dense,
                   multiple=task.size_multiple(s), desc=f"{task.name}@{condition}", augment=augment, val=val)
    logits = predict(model, test_images, s.eval_batch_size, device, task.size_multiple(s))
    scores = task.score(s, logits, test_targets, n_out)
    seconds = time.perf_counter() - t0
    log.info("downstream %s@%s: %s (%.1f s)", task.name, condition,
             ", ".join(f"{r['metric']}={r['value']:.4f} [{r.get('ci_low', float('nan')):.4f}, "
                       f"{r.get('ci_high', float('nan')):.4f}]" for r in scores[:1]), seconds)
    per_epoch = -(-len(images) // min(s.batch_size, len(images)))
    run = {"steps_run": info["steps_run"], "epochs_run": round(info["steps_run"] / per_epoch, 3),
           "best_step": info.get("best_step", info["steps_run"])}
    if val is not None:
        run["validation"] = {"source": "real training split (held out in every condition)", "n_val": n_val,
                             "fraction": s.val_fraction, "patience": s.patience, "min_delta": s.min_delta,
                             "every_steps": info["val_every"], "n_validations": info["n_validations"],
                             "best_val_loss": info["best_val_loss"], "stopped_early": info["stopped_early"]}
    records = []
    for score in scores:
        records.append({**base, **score, "higher_is_better": True, "train_on": condition, "n_train_real": n_real,
                        "n_train_synthetic": n_syn, "weights": weights, "steps": steps, "epochs": epochs,
                        "final_train_loss": info["final_train_loss"], "seconds": seconds, **run, **extra,
                        **({"augment": dataclasses.asdict(s.augment)} if condition == "real_augmented" else {})})
    return records, model

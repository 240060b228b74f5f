"""Bootstrap confidence intervals of the downstream scores over the real test images.

Every score is a function of per-test-image statistics (segmentation: true/false positives and false negatives per image
and class; classification: the image's label, prediction and class probabilities). A bootstrap replicate redraws the
test images with replacement; it is expressed as multiplicity weights ``w`` (multinomial counts, one row per replicate),
so each score is computed for a whole block of replicates at once with numpy (vectorised, bounded memory: replicates
are processed in blocks). The point estimate is the same formula at ``w = 1``.

The interval is the percentile bootstrap (``ci_method``), seeded (``ci_seed``); replicates where a score is undefined
(e.g. a resample without any image of a class, for that class's AUC) leave that class out of the replicate's macro
mean, as the point estimate leaves out classes without support.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

METHOD = "percentile bootstrap over test images (multinomial resampling)"
BLOCK = 250  # replicates per block (memory: BLOCK x n_test floats per statistic)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    valid = ~np.isnan(x)
    total = np.where(valid, x, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# --- statistics: weights [B, N] -> values [B] (or [B, K] per class) ---------------------------------------------------
def segmentation_stats(preds: np.ndarray, targets: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per-image, per-foreground-class counts [N, K-1] of true positives, false positives and false negatives."""
    preds = preds.reshape(len(preds), -1)
    targets = targets.reshape(len(targets), -1)
    out = {"tp": [], "fp": [], "fn": []}
    for k in range(1, num_classes):
        p, t = preds == k, targets == k
        out["tp"].append((p & t).sum(1))
        out["fp"].append((p & ~t).sum(1))
        out["fn"].append((~p & t).sum(1))
    return {key: np.stack(v, axis=1).astype(np.float64) for key, v in out.items()}


def overlap_per_class(w: np.ndarray, stats: dict, kind: str, aggregation: str) -> np.ndarray:
    """Dice (``kind='dice'``) or IoU per foreground class, [B, K-1]. ``samplewise``: the score of each image, averaged
    over the images where the class is in the prediction or the target (0/0 images do not count); ``global``: one
    score from the counts summed over the images."""
    tp, fp, fn = stats["tp"], stats["fp"], stats["fn"]
    coef = 2.0 if kind == "dice" else 1.0
    if aggregation == "global":
        stp, sfp, sfn = w @ tp, w @ fp, w @ fn
        return _div(coef * stp, coef * stp + sfp + sfn)
    per_image = _div(coef * tp, coef * tp + fp + fn)          # [N, K-1], nan where 0/0
    valid = (~np.isnan(per_image)).astype(np.float64)
    return _div(w @ np.nan_to_num(per_image), w @ valid)


def classification_per_class(w: np.ndarray, labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    """Weighted per-class recall and F1, [B, K] each (nan where a class has no support / no tp+fp+fn)."""
    y = np.eye(num_classes)[labels]            # [N, K]
    p = np.eye(num_classes)[preds]
    tp = w @ (y * p)
    support = w @ y
    predicted = w @ p
    recall = _div(tp, support)
    f1 = _div(2 * tp, support + predicted)     # 2tp / (2tp + fp + fn)
    return {"recall": recall, "f1": f1}


def auc_per_class(w: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Weighted one-vs-rest ROC AUC per class, [B, K] (ties count 1/2; nan without positives or negatives)."""
    out = []
    for k in range(probs.shape[1]):
        order = np.argsort(probs[:, k], kind="stable")
        scores, pos = probs[order, k], labels[order] == k
        ws = w[:, order]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])   # tie groups of the ascending scores
        group = np.cumsum(np.r_[True, scores[1:] != scores[:-1]]) - 1
        neg_in_group = np.add.reduceat(ws * ~pos, starts, axis=1)        # [B, U]
        neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group
        credit = (neg_below + 0.5 * neg_in_group)[:, group]               # [B, N]
        num = (ws * pos * credit).sum(1)
        den = (ws * pos).sum(1) * (ws * ~pos).sum(1)
        out.append(_div(num, den))
    return np.stack(out, axis=1)


# --- the bootstrap -----------------------------------------------------------------------------------------------------
def bootstrap_scores(n: int, statistics: Callable[[np.ndarray], dict[str, np.ndarray]], n_boot: int, level: float,
                     seed: int) -> dict[str, dict]:
    """{name: {value, ci_low, ci_high, ...}} for every statistic ``statistics(w) -> {name: [B] values}``."""
    point = {k: float(v[0]) for k, v in statistics(np.ones((1, n))).items()}
    out = {k: {"value": v} for k, v in point.items()}
    if n_boot <= 0 or n < 2:
        return out
    rng = np.random.default_rng(seed)
    reps: dict[str, list] = {k: [] for k in point}
    for start in range(0, n_boot, BLOCK):
        b = min(BLOCK, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        for k, v in statistics(w).items():
            reps[k].append(v)
    alpha = (1 - level) / 2
    for k, parts in reps.items():
        values = np.concatenate(parts)
        finite = values[~np.isnan(values)]
        lo, hi = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (np.nan, np.nan))
        out[k].update(ci_low=float(lo), ci_high=float(hi), ci_level=level, ci_method=METHOD, n_boot=n_boot,
                      ci_seed=seed, ci_n_units=n, ci_n_defined=int(len(finite)))
    return out


def segmentation_scores(preds: np.ndarray, targets: np.ndarray, num_classes: int, aggregation: str, n_boot: int,
                        level: float, seed: int) -> dict[str, dict]:
    """``dice`` / ``iou`` (mean over foreground classes) and ``dice_class<k>`` / ``iou_class<k>``, with CIs."""
    stats = segmentation_stats(np.asarray(preds), np.asarray(targets), num_classes)

    def statistics(w):
        out = {}
        for kind in ("dice", "iou"):
            per_class = overlap_per_class(w, stats, kind, aggregation)
            out[kind] = _nanmean(per_class, axis=1)
            if per_class.shape[1] > 1:
                out.update({f"{kind}_class{k + 1}": per_class[:, k] for k in range(per_class.shape[1])})
        return out
    return bootstrap_scores(len(preds), statistics, n_boot, level, seed)


def classification_scores(probs: np.ndarray, labels: np.ndarray, n_boot: int, level: float,
                          seed: int) -> dict[str, dict]:
    """``acc``, ``bacc`` (macro recall over classes with support), ``f1`` (macro over classes with tp+fp+fn > 0) and
    ``auc`` (macro one-vs-rest over classes with positives and negatives), with CIs."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(int)
    preds = probs.argmax(1)
    correct = (preds == labels).astype(np.float64)

    def statistics(w):
        per = classification_per_class(w, labels, preds, probs.shape[1])
        return {"acc": _div(w @ correct, w.sum(1)), "bacc": _nanmean(per["recall"], 1), "f1": _nanmean(per["f1"], 1),
                "auc": _nanmean(auc_per_class(w, labels, probs), 1)}
    return bootstrap_scores(len(labels), statistics, n_boot, level, seed)

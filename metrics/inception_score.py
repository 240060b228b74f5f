"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over splits of the synthetic samples.

It needs class logits, so it is only computed from an extractor whose features are a logits layer (e.g.
``inception_fid`` with ``features: logits_unbiased``, torch-fidelity's IS layer); compute_feature_metrics refuses
other features. The record carries the extractor's weights and hash like every other: ``is_inception`` needs the
standard FID Inception weights, other weights give ``is_<extractor suffix>`` (not comparable to published IS).
Splitting follows torch-fidelity (``isc_features_to_metric``): a seeded ``RandomState(seed).permutation`` shuffle,
then ``splits`` contiguous chunks, float64 softmax. The real set's IS is recorded beside it as a reference.
"""
from __future__ import annotations

import numpy as np
import torch

from medsynbench.metrics.registry import register_metric


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """Mean and std over ``splits`` of exp(mean KL(p(y|x) || p(y))) from [N, classes] logits."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"Inception Score needs [N, classes>=2] logits, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        log_q = chunk.exp().mean(0).log()
        scores.append(float((chunk.exp() * (chunk - log_q)).sum(1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


@register_metric("is", higher_is_better=True, requires="logits")
def is_metric(real_feats, fake_feats, is_splits: int = 10, seed: int = 0, **_) -> dict:
    """Inception Score of the synthetic samples (needs a logits layer); the real set's IS is recorded too."""
    splits = min(is_splits, len(fake_feats))
    mean, std = inception_score(fake_feats, splits=splits, seed=seed)
    real_mean, _ = inception_score(real_feats, splits=min(is_splits, len(real_feats)), seed=seed)
    warning = None if splits == is_splits else f"IS splits reduced to {splits} by the sample count"
    return {"value": mean, "std": std, "splits": splits, "is_real": real_mean, "seed": seed, "warning": warning}

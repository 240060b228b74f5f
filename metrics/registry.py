"""Metric registry: each metric is a pure function registered under its name with its sort direction.

A registry (rather than one boolean flag per metric) lets configs pick metrics by name and lets the leaderboard
sort by ``higher_is_better`` without knowing the metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., dict]
    higher_is_better: bool
    kind: str  # "feature" (real_feats, fake_feats), "image" (real_images, fake_images) or "generator" (gan)
    doc: str
    requires: str | None = None  # "logits": only from an extractor whose features are class logits


_METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, higher_is_better: bool, kind: str = "feature", requires: str | None = None):
    """Decorator: ``@register_metric("fd", higher_is_better=False)`` on ``fn(real, fake, **params) -> dict``
    (generator metrics: ``fn(gan, **params) -> dict``)."""
    if kind not in ("feature", "image", "generator"):
        raise ValueError(f"metric kind must be 'feature', 'image' or 'generator', got {kind!r}")

    def wrap(fn):
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered (by {_METRICS[name].fn.__module__})")
        _METRICS[name] = MetricSpec(name, fn, higher_is_better, kind, (fn.__doc__ or "").strip().split("\n")[0],
                                    requires)
        return fn
    return wrap


def get_metric(name: str) -> MetricSpec:
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; valid names: {', '.join(sorted(_METRICS))}")
    return _METRICS[name]


def list_metrics(kind: str | None = None) -> list[str]:
    return sorted(n for n, s in _METRICS.items() if kind is None or s.kind == kind)

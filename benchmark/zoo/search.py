"""Search and rank packages by their metadata, as medigan's model selector does, with the benchmark's own metrics.

:func:`find` matches keywords (case-insensitive substrings) against every string, number and key found recursively
in a package's metadata; ``AND``: every keyword matches, ``OR``: at least one, ``XOR``: exactly one.
:func:`rank` orders packages by a metric in its right direction: the ``higher_is_better`` the metric's record carries
(as the leaderboard ranks), else the metric registry's direction (:func:`benchmark.objective.metric_direction`);
packages without the metric are listed separately (``missing``), never ranked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from medsynbench.benchmark.zoo.package import PackageError

OPERATORS = ("AND", "OR", "XOR")


def _strings(obj, out: list[str]) -> list[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.append(str(key).lower())
            _strings(value, out)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _strings(value, out)
    elif obj is not None:
        out.append(str(obj).lower())
    return out


def matches(metadata: dict, keywords, operator: str = "AND") -> bool:
    op = str(operator).upper()
    if op not in OPERATORS:
        raise PackageError(f"search operator {operator!r}: use one of {OPERATORS}")
    keywords = [keywords] if isinstance(keywords, str) else list(keywords)
    if not keywords:
        raise PackageError("find needs at least one keyword")
    texts = _strings(metadata, [])
    hits = sum(any(str(k).lower() in t for t in texts) for k in keywords)
    return {"AND": hits == len(keywords), "OR": hits >= 1, "XOR": hits == 1}[op]


def find(registry, keywords, operator: str = "AND") -> list[str]:
    """Ids (sorted) of the packages whose metadata matches ``keywords`` under ``operator``. ``registry``: a
    :class:`~medsynbench.benchmark.zoo.registry.Registry` or a dict of id -> metadata."""
    meta = registry if isinstance(registry, dict) else registry.metadata()
    return sorted(pid for pid, m in meta.items() if matches(m, keywords, operator))


def metric_higher_is_better(metric: str, records: list[dict]) -> bool:
    """The direction of a metric: from its records' ``higher_is_better`` (all must agree), else the registry."""
    seen = {bool(r["higher_is_better"]) for r in records if r.get("higher_is_better") is not None}
    if len(seen) > 1:
        raise PackageError(f"metric {metric!r}: packages disagree on its direction (higher_is_better both ways)")
    if seen:
        return seen.pop()
    from medsynbench.benchmark.objective import metric_direction

    direction = metric_direction(metric)
    if direction is None:
        raise PackageError(f"metric {metric!r}: no package says whether higher is better and no registered metric "
                           "has that name")
    return direction == "maximize"


@dataclass
class Ranking:
    metric: str
    higher_is_better: bool
    ranked: list[tuple[str, float]] = field(default_factory=list)  # best first
    missing: list[str] = field(default_factory=list)                 # candidates without the metric

    @property
    def best(self) -> str | None:
        return self.ranked[0][0] if self.ranked else None

    def as_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better,
                "ranked": [{"rank": i + 1, "id": pid, "value": v} for i, (pid, v) in enumerate(self.ranked)],
                "missing": self.missing}


def rank(registry, metric: str, ids: list[str] | None = None) -> Ranking:
    """Rank ``ids`` (default: every package) by ``metric`` in its direction; ties keep id order."""
    import math

    meta = registry if isinstance(registry, dict) else registry.metadata()
    ids = sorted(meta) if ids is None else list(ids)
    have, missing = [], []
    for pid in ids:
        rec = (meta[pid].get("metrics") or {}).get(metric)
        value = rec.get("value") if isinstance(rec, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            have.append((pid, float(value), rec))
        else:
            missing.append(pid)
    higher = metric_higher_is_better(metric, [r for _, _, r in have])
    ranked = sorted(((pid, v) for pid, v, _ in have), key=lambda t: (-t[1] if higher else t[1], t[0]))
    return Ranking(metric, higher, ranked, missing)


def find_rank_and_generate(registry, keywords, metric: str, num_samples: int, operator: str = "AND",
                           output_dir=None, seed: int = 0, batch_size: int = 64, device="cpu", **kwargs):
    """Find packages, rank them by ``metric``, generate ``num_samples`` with the best; returns
    ``(ranking, result of generate)``. ``output_dir`` may be a callable of the best package id."""
    from medsynbench.benchmark.zoo.generate import generate

    found = find(registry, keywords, operator)
    if not found:
        raise PackageError(f"no package matches {list(keywords) if not isinstance(keywords, str) else keywords} "
                           f"({operator})")
    loadable = [pid for pid in found if registry.get(pid).loadable]
    ranking = rank(registry, metric, loadable)
    if ranking.best is None:
        raise PackageError(f"none of the matching packages {loadable} has the metric {metric!r}")
    if callable(output_dir):
        output_dir = output_dir(ranking.best)
    result = generate(registry, ranking.best, num_samples, output_dir=output_dir, seed=seed, batch_size=batch_size,
                      device=device, **kwargs)
    return ranking, result

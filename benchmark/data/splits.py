"""Seeded splits and nested, label-stratified training subsets.

Nesting: ``nested_order`` gives one fixed ordering of the train split per seed; a training-set size n takes its first
n items, so the 500-image set lies inside the 1000-image set, inside the 2500-image set, and size is the only thing
that changes between them. Stratification: each class is shuffled on its own and item i of a class with n_c members
is placed at position (i + 0.5) / n_c; sorting by that key interleaves the classes so that every prefix holds each
class within one image of its proportion.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of the sorted ids, one per line: the record of exactly which files a run used."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def nested_order(ids: Sequence[str], labels: Sequence[int] | None, seed: int) -> list[int]:
    """Indices into ``ids``: a seeded ordering whose prefixes are label-stratified (see module docstring).

    The result depends only on the set of (id, label) pairs and the seed, not on the input order.
    """
    rng = np.random.default_rng(seed)
    canon = sorted(range(len(ids)), key=lambda i: ids[i])
    if labels is None:
        return [canon[i] for i in rng.permutation(len(canon))]
    keys: list[tuple[float, int, int]] = []
    for cls in sorted({labels[i] for i in canon}):
        members = [i for i in canon if labels[i] == cls]
        for rank, j in enumerate(rng.permutation(len(members))):
            keys.append(((rank + 0.5) / len(members), cls, members[j]))
    return [i for _, _, i in sorted(keys)]


def random_split(ids: Sequence[str], groups: Sequence[str] | None, labels: Sequence[int] | None,
                 val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Seeded train/val/test assignment per item.

    With groups (e.g. patients) whole groups are assigned, so no group spans two splits; the split is stratified by
    label when labels exist (each class split in the same proportions; with groups, a group counts in the class most
    of its images have), so that a small test split still holds every class.
    """
    n = len(ids)
    out = ["train"] * n
    if groups is not None:
        units: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            units.setdefault(g, []).append(i)
        rng = np.random.default_rng(seed)
        if labels is None:
            _assign([units[g] for g in sorted(units)], out, val_fraction, test_fraction, rng)
            return out
        by_class: dict = {}
        for g in sorted(units):
            members = [labels[i] for i in units[g]]
            major = max(sorted(set(members), key=str), key=members.count)
            by_class.setdefault(major, []).append(units[g])
        for cls in sorted(by_class, key=str):
            _assign(by_class[cls], out, val_fraction, test_fraction, rng)
        return out
    strata = [list(range(n))] if labels is None else [[i for i in range(n) if labels[i] == c]
                                                       for c in sorted(set(labels))]
    rng = np.random.default_rng(seed)
    for members in strata:
        members = sorted(members, key=lambda i: ids[i])
        _assign([[i] for i in members], out, val_fraction, test_fraction, rng)
    return out


def _assign(blocks: list[list[int]], out: list[str], val_fraction: float, test_fraction: float,
            rng: np.random.Generator) -> None:
    """Walk the blocks in seeded order: test until test_fraction of the items is reached, then val, rest train."""
    total = sum(len(b) for b in blocks)
    n_test, n_val = round(total * test_fraction), round(total * val_fraction)
    seen = 0
    for k in rng.permutation(len(blocks)):
        split = "test" if seen < n_test else "val" if seen < n_test + n_val else "train"
        for i in blocks[k]:
            out[i] = split
        seen += len(blocks[k])

"""Clients as partitions of a dataset: patient/site-disjoint where the dataset has a group column (or pattern), else
random over images; sizes by ratio (e.g. 2/12/20); the class proportions of each client kept or skewed.

Both the training and the test split are partitioned with the same ratios: a client (a hospital) trains on its part
of the training split and evaluates on its part of the test split. The loader already keeps every group in one
split, so a group assigned to a client never appears at another client, in either split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from medsynbench.benchmark.federated.config import LABEL_MODES, PARTITION_BY
from medsynbench.benchmark.validate import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Partition:
    by: str                                   # group | random
    column: str | None                        # the group column / pattern used, or None
    train: list[list[int]] = field(default_factory=list)   # per client: indices into bundle.train
    test: list[list[int]] = field(default_factory=list)    # per client: indices into bundle.test
    groups: dict[str, str] = field(default_factory=dict)   # id -> group (empty when random)

    def describe(self, bundle) -> dict:
        out = {"by": self.by, "column": self.column, "clients": []}
        for k, (tr, te) in enumerate(zip(self.train, self.test)):
            row = {"client": k, "n_train": len(tr), "n_test": len(te)}
            if bundle.train.labels is not None:
                names = bundle.class_names or [str(i) for i in range(int(bundle.train.labels.max()) + 1)]
                row["train_classes"] = {n: int((bundle.train.labels[tr] == i).sum()) for i, n in enumerate(names)}
                row["test_classes"] = {n: int((bundle.test.labels[te] == i).sum()) for i, n in enumerate(names)}
            if self.groups:
                row["n_groups"] = len({self.groups[bundle.train.ids[i]] for i in tr}
                                      | {self.groups[bundle.test.ids[i]] for i in te})
            out["clients"].append(row)
        return out


def item_groups(dataset_cfg) -> tuple[dict[str, str], str | None]:
    """id -> patient/site of every image of a dataset (from ``group_column`` of its index CSV or ``group_pattern``),
    found as the loader finds them (no pixels read). Empty when the dataset has neither."""
    from medsynbench.benchmark.data import sources
    from medsynbench.benchmark.data.config import DatasetConfig
    from medsynbench.benchmark.data.loader import _as_config

    ds = _as_config(DatasetConfig, dataset_cfg, "dataset")
    if not (ds.group_column or ds.group_pattern) or ds.format == "npz":
        return {}, None
    root = Path(ds.root).expanduser().resolve()
    items = sources.discover_files(ds, root)
    if ds.index_csv:
        sources.join_index_csv(items, ds, root)
    sources.apply_groups(items, ds)
    return ({it.id: str(it.group) for it in items if it.group is not None},
            f"group_column={ds.group_column}" if ds.group_column else f"group_pattern={ds.group_pattern}")


def _check(pcfg) -> list[float]:
    if pcfg.by not in PARTITION_BY:
        raise ConfigError(f"federated.partition.by={pcfg.by!r} is not one of {list(PARTITION_BY)}")
    if pcfg.labels not in LABEL_MODES:
        raise ConfigError(f"federated.partition.labels={pcfg.labels!r} is not one of {list(LABEL_MODES)}")
    ratios = [float(r) for r in pcfg.ratios]
    if len(ratios) < 1 or any(r <= 0 for r in ratios):
        raise ConfigError(f"federated.partition.ratios={ratios}: one positive number per client is needed")
    if pcfg.skew_alpha <= 0:
        raise ConfigError(f"federated.partition.skew_alpha must be > 0, got {pcfg.skew_alpha}")
    return ratios


def _assign_units(units: list[list[int]], unit_class: list, fractions: np.ndarray, labels_mode: str, alpha: float,
                  rng: np.random.Generator) -> list[list[int]]:
    """Units (a patient's images, or one image) to clients: per class, in seeded order, each unit to the client
    furthest below its target count (target = fraction of the class; ``skew``: Dirichlet-perturbed fractions)."""
    n_clients = len(fractions)
    out: list[list[int]] = [[] for _ in range(n_clients)]
    for cls in sorted(set(unit_class), key=str):
        members = [u for u, c in zip(units, unit_class) if c == cls]
        target = fractions if labels_mode == "keep" else rng.dirichlet(alpha * n_clients * fractions)
        total = sum(len(u) for u in members)
        have = np.zeros(n_clients)
        for j in rng.permutation(len(members)):
            k = int(np.argmax(target * total - have))
            out[k].extend(members[j])
            have[k] += len(members[j])
    return [sorted(c) for c in out]


def _split_units(ids: list[str], labels, groups: dict[str, str] | None) -> tuple[list[list[int]], list]:
    if groups:
        by_group: dict[str, list[int]] = {}
        for i, id_ in enumerate(ids):
            by_group.setdefault(groups.get(id_, f"__image__{id_}"), []).append(i)
        units = [by_group[g] for g in sorted(by_group)]
    else:
        units = [[i] for i in sorted(range(len(ids)), key=lambda i: ids[i])]
    if labels is None:
        return units, [0] * len(units)
    lab = labels.tolist()
    classes = []
    for u in units:  # a patient counts in the class most of its images have
        vals = [lab[i] for i in u]
        classes.append(max(sorted(set(vals)), key=vals.count))
    return units, classes


def make_partition(bundle, dataset_cfg, pcfg) -> Partition:
    """Partition ``bundle.train`` and ``bundle.test`` into ``len(pcfg.ratios)`` clients (see the module docstring)."""
    ratios = _check(pcfg)
    fractions = np.asarray(ratios) / sum(ratios)
    groups, column = ({}, None) if pcfg.by == "random" else item_groups(dataset_cfg)
    if pcfg.by == "group" and not groups:
        raise ConfigError(f"federated.partition.by=group but dataset '{bundle.name}' has no patient/site column "
                          "(set dataset.group_column or dataset.group_pattern, or partition.by=random|auto)")
    by = "group" if groups else "random"
    if not groups:
        log.info("federated: dataset %s has no patient/site column: clients are random image partitions "
                 "(patient-disjointness cannot be guaranteed)", bundle.name)
    part = Partition(by=by, column=column, groups=groups)
    rng = np.random.default_rng(pcfg.seed)
    for split in ("train", "test"):
        images = getattr(bundle, split)
        units, classes = _split_units(images.ids, images.labels, groups)
        clients = _assign_units(units, classes, fractions, pcfg.labels, pcfg.skew_alpha, rng)
        for k, c in enumerate(clients):
            if not c:
                raise ConfigError(f"federated.partition: client {k} gets no {split} images (ratios {ratios}, "
                                  f"{len(images)} {split} images): use fewer clients, other ratios or more data")
        setattr(part, split, clients)
    return part

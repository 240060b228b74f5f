"""Nested, stratified, seeded training subsets; fixed disjoint test split; test caps; grouped random splits."""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynbench.benchmark.data import DataError, load_dataset
from medsynbench.benchmark.data.splits import nested_order, random_split

CLASSES = ["common", "medium", "rare"]


def _labelled_folder(root: Path, n: int = 60) -> dict:
    """n 8x8 images, imbalanced labels (60% / 30% / 10%), 25% of them in the test split."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(root / "images" / f"s{i:03d}.png")
        label = CLASSES[0] if i % 10 < 6 else CLASSES[1] if i % 10 < 9 else CLASSES[2]
        rows.append([f"s{i:03d}", label, "test" if i % 4 == 3 else "train"])
    with (root / "index.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "label", "split"], *rows])
    return dict(name="strat", root=str(root), index_csv="index.csv", label_column="label", split_column="split",
                split="column", class_names=CLASSES)


def test_nested_order_prefixes_are_stratified():
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=500, p=[0.7, 0.2, 0.1]).tolist()
    ids = [f"id{i}" for i in range(500)]
    order = nested_order(ids, labels, seed=3)
    assert sorted(order) == list(range(500))
    share = np.bincount(labels) / 500
    for k in (10, 25, 50, 100, 250, 499):
        counts = np.bincount([labels[i] for i in order[:k]], minlength=3)
        assert np.all(np.abs(counts - k * share) <= 1.0 + 1e-9), (k, counts, k * share)
    # the ordering is a property of the (id, label) set and the seed, not of the input order
    perm = rng.permutation(500)
    again = nested_order([ids[i] for i in perm], [labels[i] for i in perm], seed=3)
    assert [ids[perm[i]] for i in again] == [ids[i] for i in order]
    assert nested_order(ids, labels, seed=4) != order


def test_unstratified_order_is_seeded_permutation():
    ids = [f"x{i}" for i in range(50)]
    a, b = nested_order(ids, None, 0), nested_order(ids, None, 1)
    assert sorted(a) == list(range(50)) and a != b and a != list(range(50))
    assert a == nested_order(ids, None, 0)


def test_training_subsets_are_nested_stratified_and_recorded(tmp_path):
    cfg = _labelled_folder(tmp_path)
    full = load_dataset(cfg, {"image_size": 8})
    assert len(full.train) == 45 and len(full.test) == 15
    subsets = {n: load_dataset(cfg, {"image_size": 8, "train_size": n}) for n in (5, 10, 20, 40)}
    sizes = sorted(subsets)
    for small, big in zip(sizes, sizes[1:]):
        assert set(subsets[small].train.ids) < set(subsets[big].train.ids)
        assert subsets[big].train.ids[:small] == subsets[small].train.ids  # prefix of one fixed ordering
    assert set(subsets[40].train.ids) < set(full.train.ids) and full.train.ids[:40] == subsets[40].train.ids
    share = Counter(full.class_names[i] for i in full.train.labels.tolist())
    for n, b in subsets.items():
        got = Counter(b.class_names[i] for i in b.train.labels.tolist())
        for c in CLASSES:
            assert abs(got[c] - n * share[c] / 45) <= 1.0, (n, c, got)
        assert b.meta["train_ids_sha256"] == hashlib.sha256("\n".join(sorted(b.train.ids)).encode()).hexdigest()
        assert b.meta["counts"]["train"] == n and b.meta["split_sizes"]["train"] == 45
        assert b.meta["class_counts"]["train"] == dict(got) | {c: got[c] for c in CLASSES}
        # pixels belong to the ids: image s{i} has grey value i
        for k, i in enumerate(b.train.ids):
            assert round(float((b.train.images[k].mean() + 1) / 2 * 255)) == int(i[1:])
    other_seed = load_dataset(cfg, {"image_size": 8, "train_size": 10, "subset_seed": 1})
    assert set(other_seed.train.ids) != set(subsets[10].train.ids)
    assert load_dataset(cfg, {"image_size": 8, "train_size": 10}).train.ids == subsets[10].train.ids


def test_test_split_fixed_disjoint_and_cappable(tmp_path):
    cfg = _labelled_folder(tmp_path)
    runs = [load_dataset(cfg, {"image_size": 8, "train_size": n, "subset_seed": s}) for n, s in
            ((None, 0), (10, 0), (10, 5), (30, 2))]
    for b in runs:
        assert not set(b.train.ids) & set(b.test.ids)
        assert b.test.ids == runs[0].test.ids and b.meta["test_ids_sha256"] == runs[0].meta["test_ids_sha256"]
    capped = [load_dataset(cfg, {"image_size": 8, "test_size": 6, "train_size": n}) for n in (None, 10)]
    assert capped[0].test.ids == capped[1].test.ids and len(capped[0].test) == 6
    assert set(capped[0].test.ids) < set(runs[0].test.ids)
    assert capped[0].meta["test_size"] == 6 and capped[0].meta["split_sizes"]["test"] == 15
    # the cap is stratified too: test split is 9 common / 3 medium / 3 rare -> 6 keeps 3.6 / 1.2 / 1.2 (+-1)
    got = np.bincount(capped[0].test.labels.numpy(), minlength=3)
    assert np.all(np.abs(got - 6 * np.array([9, 3, 3]) / 15) <= 1.0) and got.sum() == 6
    with pytest.raises(DataError, match="test_size=16 but the test split .* has only 15"):
        load_dataset(cfg, {"test_size": 16})
    with pytest.raises(DataError, match="train_size=46 but the train split .* has only 45"):
        load_dataset(cfg, {"train_size": 46})


def test_random_split_grouped_and_stratified():
    ids = [f"p{p:02d}_s{s}" for p in range(20) for s in range(5)]
    groups = [i[:3] for i in ids]
    splits = random_split(ids, groups, None, 0.1, 0.2, seed=0)
    per_group = {}
    for g, s in zip(groups, splits):
        per_group.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in per_group.values())
    assert Counter(splits) == {"train": 70, "val": 10, "test": 20}
    assert random_split(ids, groups, None, 0.1, 0.2, seed=1) != splits
    labels = [0] * 80 + [1] * 20
    strat = random_split(ids, None, labels, 0.0, 0.25, seed=0)
    assert Counter(lab for lab, s in zip(labels, strat) if s == "test") == {0: 20, 1: 5}


def test_group_pattern_keeps_patients_together(tmp_path):
    (tmp_path / "images").mkdir()
    for p in range(10):
        for s in range(3):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / f"patient{p:03d}_slice_{s}.png")
    cfg = dict(name="g", root=str(tmp_path), group_pattern=r"^(patient\d+)", split="random",
               val_fraction=0.2, test_fraction=0.2, split_seed=7)
    b = load_dataset(cfg, {"image_size": None})
    pats = {name: {i.split("_")[0] for i in s.ids} for name, s in (("train", b.train), ("val", b.val),
                                                                  ("test", b.test))}
    assert not pats["train"] & pats["test"] and not pats["train"] & pats["val"] and not pats["val"] & pats["test"]
    assert (len(pats["train"]), len(pats["val"]), len(pats["test"])) == (6, 2, 2)
    assert len(b.test) == 6

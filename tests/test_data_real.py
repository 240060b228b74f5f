"""The embedded dataset, the registered dataset configs, and the staged real datasets (skipped when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from medsynbench.benchmark.data import DataConfig, DatasetConfig, load_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml"))
DEFAULT_DATA = OmegaConf.load(REPO / "conf" / "data" / "default.yaml")


def _cfg(name: str, **over):
    return OmegaConf.merge(OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml"), over)


def _needs_shared(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"real dataset not available: {path} is absent (staged only in the project's build environment)")
    return path


def test_all_required_dataset_configs_exist():
    assert {"isic_mini", "kvasir", "isic2018", "acdc", "kermany", "chase_db1", "breastmnist", "pneumoniamnist",
            "sliver07", "idrid"} <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_config_matches_schema(name):
    """Each YAML merges into the structured schema (as Hydra does at compose time) and its root resolves."""
    merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(REPO / f"conf/dataset/{name}.yaml"))
    assert merged.name == name
    if name in ("sliver07", "idrid"):  # not staged: the user must set the root
        assert OmegaConf.is_missing(merged, "root")
    else:
        assert Path(merged.root).is_absolute()
        if name != "isic_mini" and "MEDSYNBENCH_SHARED_DATA" not in os.environ:
            assert merged.root.startswith(str(REPO / ".." / "shared" / "data"))


def test_data_default_config_and_typo_rejection():
    merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), DEFAULT_DATA))
    assert merged == DataConfig()  # the YAML states the schema defaults explicitly
    assert (merged.image_size, merged.resize_method, merged.intensity, merged.train_size) == (64, "bilinear",
                                                                                               "fixed", None)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(OmegaConf.structured(DataConfig), {"trainsize": 5})


def test_embedded_isic_mini_loads():
    b = load_dataset(_cfg("isic_mini"), DEFAULT_DATA)
    assert (len(b.train), len(b.test), b.val) == (160, 80, None)
    assert b.train.images.shape == (160, 3, 64, 64) and b.test.masks.shape == (80, 64, 64)
    assert b.class_names == ["melanoma", "nevus", "seborrheic_keratosis"] and b.num_mask_classes == 2
    assert not set(b.train.ids) & set(b.test.ids)
    for s in (b.train, b.test):
        counts = torch.bincount(s.labels, minlength=3)
        assert (counts > 0).all() and counts[1] > counts[0] > counts[2]  # nevus > melanoma > SK, as in ISIC 2017
        fg = s.masks.float().mean(dim=(1, 2))
        assert (fg > 0).all() and 0.05 < fg.mean() < 0.8  # every image has a lesion
        # lesions are darker than the surrounding skin (the staged set's own alignment check)
        grey = s.images.mean(dim=1)
        inside = (grey * s.masks).sum(dim=(1, 2)) / s.masks.sum(dim=(1, 2))
        outside = (grey * (1 - s.masks)).sum(dim=(1, 2)) / (1 - s.masks).sum(dim=(1, 2)).clamp(min=1)
        assert (inside < outside).float().mean() > 0.85
    folder = REPO / "data" / "isic2018_mini"
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5 * 2**20
    source = (folder / "SOURCE.md").read_text()
    assert "CC BY-NC 4.0" in source and "Codella" in source and "Tschandl" in source


def test_embedded_subset_sizes_are_nested():
    data = OmegaConf.merge(DEFAULT_DATA, {"image_size": 16})
    small = load_dataset(_cfg("isic_mini"), OmegaConf.merge(data, {"train_size": 50}))
    large = load_dataset(_cfg("isic_mini"), OmegaConf.merge(data, {"train_size": 100}))
    assert large.train.ids[:50] == small.train.ids and small.test.ids == large.test.ids
    assert torch.bincount(small.train.labels).tolist() == [10, 36, 4]  # 32/115/13 of 160, scaled to 50 (+-1)


def test_acdc_split_by_patient():
    _needs_shared("acdc-slices")
    b = load_dataset(_cfg("acdc"), {"image_size": 32})
    patients = {name: {i.split("_")[0] for i in s.ids} for name, s in (("train", b.train), ("val", b.val),
                                                                      ("test", b.test))}
    assert (len(patients["train"]), len(patients["val"]), len(patients["test"])) == (70, 10, 20)
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["val"]
    assert not patients["val"] & patients["test"]
    assert (len(b.train), len(b.val), len(b.test)) == (1312, 210, 380)
    assert b.num_mask_classes == 4 and set(b.train.masks.unique().tolist()) == {0, 1, 2, 3}
    assert b.train.images.shape[1] == 1
    # ACDC: the LV cavity (3) is brighter than the myocardium (2) on the large majority of slices
    both = [k for k in range(len(b.train)) if (b.train.masks[k] == 2).any() and (b.train.masks[k] == 3).any()]
    brighter = [b.train.images[k, 0][b.train.masks[k] == 3].mean() > b.train.images[k, 0][b.train.masks[k] == 2].mean()
                for k in both]
    assert sum(brighter) / len(brighter) > 0.9


def test_kvasir_masks_binarised_and_split_seeded():
    _needs_shared("kvasir-seg-256")
    data = {"image_size": 32, "train_size": 50, "test_size": 50}
    b = load_dataset(_cfg("kvasir"), data)
    assert (b.meta["split_sizes"]["train"], b.meta["split_sizes"]["val"], b.meta["split_sizes"]["test"]) == \
        (698, 100, 200)
    assert len(b.test) == 50 and set(b.train.masks.unique().tolist()) == {0, 1}
    again = load_dataset(_cfg("kvasir", split_seed=1), data)
    assert again.meta["test_ids_sha256"] != b.meta["test_ids_sha256"]


def test_medmnist_npz_configs():
    _needs_shared("medmnist")
    b = load_dataset(_cfg("breastmnist"), {"image_size": 28})
    assert (len(b.train), len(b.val), len(b.test)) == (546, 78, 156)
    assert torch.bincount(b.test.labels).tolist() == [42, 114] and b.class_names == ["malignant", "normal_benign"]
    p = load_dataset(_cfg("pneumoniamnist"), {"image_size": 28, "train_size": 100})
    assert torch.bincount(p.train.labels).tolist() == [10, 90]  # 388 / 3494 of 3882, stratified


def test_isic2018_kermany_chase_configs():
    _needs_shared("isic2018-task1-256")
    isic = load_dataset(_cfg("isic2018"), {"image_size": 16, "train_size": 60, "test_size": 30, "val_size": 10})
    assert isic.meta["excluded"]["unlabeled"] == 144 and isic.meta["split_sizes"]["train"] == 1503
    assert len(isic.class_names) == 3 and isic.num_mask_classes == 2
    _needs_shared("kermany-chest-xray-224")
    k = load_dataset(_cfg("kermany"), {"image_size": 16, "train_size": 40, "test_size": 20, "color": "grayscale"})
    assert k.meta["split_sizes"]["train"] == 5216 and k.meta["split_sizes"]["test"] == 624 and k.val is None
    assert k.train.images.shape == (40, 1, 16, 16) and k.class_names == ["NORMAL", "PNEUMONIA"]
    _needs_shared("chase-db1")
    c = load_dataset(_cfg("chase_db1"), {"image_size": 64})
    assert len(c.train) + len(c.test) == 28
    children = [{i[:8] for i in s.ids} for s in (c.train, c.test)]
    assert not children[0] & children[1]
    assert 0.03 < c.train.masks.float().mean() < 0.25  # vessels are a thin minority of the pixels

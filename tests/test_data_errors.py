"""Every bad input is refused inside load_dataset with a DataError naming the file (or folder) and the problem."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynbench.benchmark.data import DataError, load_dataset


def _dataset(root: Path, n: int = 6, ext: str = ".png") -> dict:
    """n grey images + same-name masks + labels.csv (id,label,split); returns a config that loads cleanly."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"im{i}{ext}")
        Image.fromarray(np.zeros((24, 24), np.uint8)).save(root / "masks" / f"im{i}.png")
        rows.append([f"im{i}", "a" if i % 2 else "b", "test" if i < 2 else "train"])
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "label", "split"], *rows])
    return dict(name="bad", root=str(root), masks_dir="masks", mask_pattern="{stem}.png", index_csv="labels.csv",
                label_column="label", split_column="split", split="column")


def _raises(cfg, *fragments: str, data=None) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(cfg, data or {"image_size": 16})
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message: {msg}"
    return msg


def test_clean_dataset_loads(tmp_path):
    b = load_dataset(_dataset(tmp_path), {"image_size": 16})  # baseline for the broken variants below
    assert len(b.train) == 4 and len(b.test) == 2


def test_unreadable_image(tmp_path):
    cfg = _dataset(tmp_path)
    (tmp_path / "images" / "im3.png").write_bytes(b"this is not a png")
    _raises(cfg, str(tmp_path / "images" / "im3.png"), "not a readable image")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image(tmp_path, ext):
    cfg = _dataset(tmp_path, ext=ext)
    path = tmp_path / "images" / f"im4{ext}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises(cfg, str(path), "truncated")


def test_mask_size_mismatch(tmp_path):
    cfg = _dataset(tmp_path)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "masks" / "im2.png")
    _raises(cfg, str(tmp_path / "masks" / "im2.png"), "does not match its image", "im2.png (24x24")


def test_mask_name_mismatch(tmp_path):
    cfg = _dataset(tmp_path)
    (tmp_path / "masks" / "im5.png").rename(tmp_path / "masks" / "im5_mask.png")
    msg = _raises(cfg, str(tmp_path / "images" / "im5.png"), "has no mask", str(tmp_path / "masks" / "im5.png"))
    assert "mask_pattern" in msg


def test_orphan_mask(tmp_path):
    cfg = _dataset(tmp_path)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(tmp_path / "masks" / "other.png")
    _raises(cfg, str(tmp_path / "masks"), "match no image", "other.png")


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    _raises(dict(name="e", root=str(tmp_path)), str(tmp_path / "images"), "no folder image files")


def test_missing_root_and_images_folder(tmp_path):
    _raises(dict(name="e", root=str(tmp_path / "nowhere")), str(tmp_path / "nowhere"), "not found")
    _raises(dict(name="e", root=str(tmp_path), images_dir="imgs"), str(tmp_path / "imgs"), "not found")


def test_split_file_names_missing_files(tmp_path):
    cfg = _dataset(tmp_path)
    (tmp_path / "train.txt").write_text("im2\nim3\nim9\n")
    (tmp_path / "test.txt").write_text("im0\n")
    cfg.update(split="files", split_column=None, split_files={"train": "train.txt", "test": "test.txt"})
    _raises(cfg, str(tmp_path / "train.txt"), "names 1 files that do not exist", "im9")


def test_split_file_missing(tmp_path):
    cfg = _dataset(tmp_path)
    cfg.update(split="files", split_column=None, split_files={"train": "train.txt", "test": "test.txt"})
    _raises(cfg, str(tmp_path / "train.txt"), "split file not found")


def test_labels_csv_names_unknown_files(tmp_path):
    cfg = _dataset(tmp_path)
    with (tmp_path / "labels.csv").open("a", newline="") as f:
        csv.writer(f).writerow(["ghost", "a", "train"])
    _raises(cfg, str(tmp_path / "labels.csv"), "1 rows name files that do not exist", "ghost")


def test_labels_csv_bad_column_and_split_value(tmp_path):
    cfg = _dataset(tmp_path)
    _raises({**cfg, "label_column": "diagnosis"}, str(tmp_path / "labels.csv"), "no column 'diagnosis'")
    text = (tmp_path / "labels.csv").read_text().replace("im3,a,train", "im3,a,training")
    (tmp_path / "labels.csv").write_text(text)
    _raises(cfg, str(tmp_path / "labels.csv"), "split 'training'", "im3")


def test_unlabelled_images_error_or_drop(tmp_path):
    cfg = _dataset(tmp_path)
    text = (tmp_path / "labels.csv").read_text().replace("im3,a,train", "im3,,train")
    (tmp_path / "labels.csv").write_text(text)
    _raises(cfg, str(tmp_path / "labels.csv"), "no label", "im3", "unlabeled=drop")
    b = load_dataset({**cfg, "unlabeled": "drop"}, {"image_size": 16})
    assert "im3" not in b.train.ids and len(b.train) == 3 and b.meta["excluded"]["unlabeled"] == 1


def test_label_not_in_class_names(tmp_path):
    cfg = _dataset(tmp_path)
    _raises({**cfg, "class_names": ["a"]}, str(tmp_path / "labels.csv"), "['b']", "class_names")


def test_group_spanning_splits(tmp_path):
    """A patient on both sides of a split file/column (e.g. ACDC slices split by slice) is refused."""
    cfg = _dataset(tmp_path)
    (tmp_path / "labels.csv").write_text(  # im0 (test) and im3 (train) are both patient p0
        "id,label,split,patient\n" + "\n".join(f"im{i},a,{'test' if i < 2 else 'train'},p{i % 3}" for i in range(6)))
    msg = _raises({**cfg, "group_column": "patient"}, str(tmp_path / "labels.csv"), "appears in splits")
    assert re.search(r"group 'p[01]'", msg)


def test_volume_without_label_volume(tmp_path):
    import nibabel as nib

    for i in range(3):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), tmp_path / f"v{i}.nii.gz")
        if i != 1:
            nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), tmp_path / f"v{i}_gt.nii.gz")
    cfg = dict(name="v", format="nifti", root=str(tmp_path), images_dir="", image_glob="*.nii.gz",
               image_exclude=["*_gt.nii.gz"], masks_dir="", mask_pattern="{stem}_gt.nii.gz")
    _raises(cfg, str(tmp_path / "v1.nii.gz"), "volume has no label volume", "v1_gt.nii.gz")


def test_volume_label_shape_mismatch_and_float_fixed(tmp_path):
    import nibabel as nib

    for i in range(3):
        nib.save(nib.Nifti1Image(np.random.rand(8, 8, 4).astype(np.float32), np.eye(4)), tmp_path / f"v{i}.nii")
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 5 if i == 2 else 4), np.uint8), np.eye(4)),
                 tmp_path / f"v{i}_gt.nii")
    cfg = dict(name="v", format="nifti", root=str(tmp_path), images_dir="", image_glob="*.nii",
               image_exclude=["*_gt.nii"], masks_dir="", mask_pattern="{stem}_gt.nii", test_fraction=0.34,
               val_fraction=0.0)
    _raises(cfg, str(tmp_path / "v2_gt.nii"), "does not match")
    (tmp_path / "v2_gt.nii").unlink()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), tmp_path / "v2_gt.nii")
    _raises(cfg, "v", "fixed needs a bit depth", "fixed_range")  # float data: no bit depth to divide by
    assert len(load_dataset(cfg, {"intensity": "minmax", "image_size": 8}).test) == 4


def test_truncated_metaimage(tmp_path):
    import SimpleITK as sitk

    for i in range(3):
        for kind in ("orig", "seg"):
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.uint8)),
                            str(tmp_path / f"liver-{kind}{i}.mhd"), useCompression=False)
    raw = tmp_path / "liver-orig1.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    cfg = dict(name="s", format="metaimage", root=str(tmp_path), images_dir="", image_glob="liver-orig*.mhd",
               masks_dir="", mask_pattern="{stem}.mhd", mask_stem_replace=["orig", "seg"], test_fraction=0.34,
               val_fraction=0.0)
    _raises(cfg, str(tmp_path / "liver-orig1.mhd"), "MetaImage")


def test_bad_config_values(tmp_path):
    cfg = _dataset(tmp_path)
    _raises({**cfg, "fromat": "folder"}, "dataset config", "fromat")  # typo in a key
    _raises(cfg, "data config", "image_sise", data={"image_sise": 32})
    _raises({**cfg, "format": "png"}, "dataset.format='png'")
    _raises(cfg, "data.intensity='normalise'", data={"intensity": "normalise"})
    _raises(cfg, "data.train_size=5", "only 4 images", data={"train_size": 5})


def test_unstaged_dataset_needs_root():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / "sliver07.yaml")
    _raises(cfg, "'sliver07'", "dataset.root must be set")

"""Every loader on small files written here: PNG/JPEG folders, npz, NIfTI, MetaImage, DICOM; preprocessing options."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from medsynbench.benchmark.data import DataConfig, load_dataset
from medsynbench.benchmark.data.preprocess import normalise
from tests.conftest import write_dicom

REPO = Path(__file__).resolve().parents[1]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _folder_dataset(root: Path, n: int = 12, ext: str = ".png", size=(20, 24)) -> list[dict]:
    """n constant-colour RGB images (H=20, W=24) with a lesion rectangle in the mask; labels + split column."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    rows = []
    for i in range(n):
        colour = (10 * i, 255 - 10 * i, 100)
        img = np.zeros((h, w, 3), np.uint8) + np.array(colour, np.uint8)
        name = f"img_{i:02d}{ext}"
        Image.fromarray(img).save(root / "images" / name, quality=95)
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2, : w // 2] = 255  # top-left quarter
        Image.fromarray(mask).save(root / "masks" / f"img_{i:02d}_segmentation.png")
        label = ["benign", "malignant"][i % 3 == 0]
        split = "test" if i % 4 == 0 else "train"
        rows.append({"id": f"img_{i:02d}", "name": name, "colour": colour, "label": label, "split": split})
    _write_csv(root / "labels.csv", ["image_id", "diagnosis", "split"],
               [[r["name"], r["label"], r["split"]] for r in rows])  # ids with extension are accepted
    return rows


def _folder_cfg(root: Path, **kw) -> dict:
    cfg = dict(name="toy", format="folder", root=str(root), images_dir="images", masks_dir="masks",
               mask_pattern="{stem}_segmentation.png", index_csv="labels.csv", id_column="image_id",
               label_column="diagnosis", split_column="split", split="column")
    cfg.update(kw)
    return cfg


def test_folder_png_masks_labels(tmp_path):
    rows = _folder_dataset(tmp_path)
    b = load_dataset(_folder_cfg(tmp_path), {"image_size": 16})
    by_id = {r["id"]: r for r in rows}
    assert b.class_names == ["benign", "malignant"]  # sorted label values
    assert len(b.train) == 9 and len(b.test) == 3 and b.val is None
    assert b.train.images.shape == (9, 3, 16, 16) and b.train.images.dtype == torch.float32
    assert b.train.masks.shape == (9, 16, 16) and b.train.masks.dtype == torch.int64
    assert b.num_mask_classes == 2
    for s in (b.train, b.test):
        for k, i in enumerate(s.ids):
            r = by_id[i]
            assert r["split"] == ("train" if s is b.train else "test")
            assert s.labels[k].item() == b.class_names.index(r["label"])
            expected = torch.tensor(r["colour"], dtype=torch.float32) / 255 * 2 - 1  # fixed: / 255, then [-1, 1]
            assert torch.allclose(s.images[k].mean(dim=(1, 2)), expected, atol=1e-5)
            # top-left quarter lesion survives the nearest resize exactly (16 divides evenly into 8 x 8)
            assert s.masks[k, :8, :8].eq(1).all() and s.masks[k].sum().item() == 64
    pp = b.meta["preprocessing"]
    assert pp["image_size"] == 16 and pp["intensity"] == "fixed" and pp["resize_method"] == "bilinear"
    assert b.meta["counts"] == {"train": 9, "val": 0, "test": 3}
    assert json.loads(json.dumps(b.meta)) == b.meta  # stored verbatim in the results record


def test_folder_jpeg_masks_binarised_at_threshold(tmp_path):
    """Lossy JPEG masks (Kvasir): channel max > 127, so ringing around the edge does not make new classes."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    truth = np.zeros((32, 32), bool)
    truth[8:24, 10:26] = True
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"p{i}.jpg")
        m = np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(m).save(tmp_path / "masks" / f"p{i}.jpg", quality=75)
    cfg = dict(name="kv", root=str(tmp_path), masks_dir="masks", split="random", test_fraction=0.34,
               val_fraction=0.0)
    b = load_dataset(cfg, {"image_size": None})
    raw = _pixels(tmp_path / "masks" / "p0.jpg")
    assert len(np.unique(raw)) > 2  # the file really has JPEG ringing values
    for s in (b.train, b.test):
        assert set(s.masks.unique().tolist()) == {0, 1}
        for k in range(len(s)):
            pred = s.masks[k].numpy().astype(bool)
            assert (pred & truth).sum() / (pred | truth).sum() > 0.95
    assert len(b.test) == 2 and len(b.train) == 4


def test_mask_threshold_and_index_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    m = np.zeros((8, 8), np.uint8)
    m[:, :4], m[:, 4:6] = 100, 200
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"a{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"a{i}.png")
    cfg = dict(name="t", root=str(tmp_path), masks_dir="masks", split="random", test_fraction=0.34,
               val_fraction=0.0)
    b = load_dataset(cfg, {"image_size": None})
    assert b.train.masks[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    idx = np.zeros((8, 8), np.uint8)
    idx[:2], idx[2:4], idx[4:6] = 1, 2, 3
    for i in range(3):
        Image.fromarray(idx).save(tmp_path / "masks" / f"a{i}.png")
    b = load_dataset({**cfg, "mask_mode": "index"}, {"image_size": 4})
    assert b.num_mask_classes == 4 and b.meta["num_mask_classes_source"].startswith("inferred")
    assert b.train.masks[0, :, 0].tolist() == [1, 2, 3, 0]  # nearest resize keeps class values


def test_16bit_png_fixed_and_minmax(tmp_path):
    (tmp_path / "images").mkdir()
    img = np.zeros((10, 10), np.uint16)
    img[:, 5:] = 4095  # 12-bit content stored in a 16-bit PNG
    for i in range(3):
        Image.fromarray(img).save(tmp_path / "images" / f"x{i}.png")
    with Image.open(tmp_path / "images" / "x0.png") as im:
        assert im.mode.startswith("I")
    cfg = dict(name="t16", root=str(tmp_path), split="random", test_fraction=0.34, val_fraction=0.0)
    fixed = load_dataset(cfg, {"image_size": None, "intensity": "fixed"}).train.images
    assert fixed.shape[1] == 1
    assert fixed[0, 0, 0, 9].item() == pytest.approx(4095 / 65535 * 2 - 1, abs=1e-6)  # divided by 16-bit max
    assert fixed[0, 0, 0, 0].item() == -1.0
    ranged = load_dataset(cfg, {"image_size": None, "fixed_range": [0, 4095]}).train.images
    assert ranged[0, 0, 0, 9].item() == pytest.approx(1.0)
    mm = load_dataset(cfg, {"image_size": None, "intensity": "minmax"}).train.images
    assert mm[0, 0, 0, 0].item() == -1.0 and mm[0, 0, 0, 9].item() == 1.0


def test_color_conversions(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6, 3), (255, 0, 0), np.uint8)).save(tmp_path / "images" / f"r{i}.png")
    cfg = dict(name="c", root=str(tmp_path), split="random", test_fraction=0.34, val_fraction=0.0)
    gray = load_dataset(cfg, {"image_size": None, "color": "grayscale"}).train.images
    assert gray.shape[1] == 1 and gray[0, 0, 0, 0].item() == pytest.approx(0.299 * 2 - 1, abs=1e-5)
    rgb = load_dataset(cfg, {"image_size": None, "color": "rgb"}).train.images
    assert rgb.shape[1] == 3 and rgb[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    # grey -> rgb replicates the channel
    for i in range(3):
        Image.fromarray(np.full((6, 6), 51, np.uint8)).save(tmp_path / "images" / f"r{i}.png")
    rgb = load_dataset(cfg, {"image_size": None, "color": "rgb"}).train.images
    assert rgb.shape[1] == 3 and torch.allclose(rgb[:, 0], rgb[:, 2])


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "area", "lanczos"])
def test_resize_methods_keep_range_and_size(tmp_path, method):
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 22), dtype=np.uint8)).save(tmp_path / "images" / f"n{i}.png")
    cfg = dict(name="r", root=str(tmp_path), split="random", test_fraction=0.34, val_fraction=0.0)
    b = load_dataset(cfg, {"image_size": 16, "resize_method": method})
    x = b.train.images
    assert x.shape == (2, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    if method == "nearest":  # nearest only copies existing grey levels
        levels = set(((x + 1) / 2 * 255).round().flatten().tolist())
        src = {v for i in b.train.ids for v in _pixels(tmp_path / "images" / f"{i}.png").flatten().tolist()}
        assert levels <= {float(v) for v in src}


def test_intensity_schemes():
    x = np.concatenate([np.linspace(0, 100, 998), [1e4, -1e4]]).astype(np.float32)[None, None]
    cfg = DataConfig(intensity="percentile", percentiles=[1.0, 99.0])
    y = normalise(x, cfg, None, "mem")
    assert y.min() == -1 and y.max() == 1
    assert (y == 1).sum() <= 12  # only the top ~1% is clipped; outliers do not squash the rest
    inner = y[0, 0, 500]
    assert -0.2 < inner < 0.2
    z = normalise(x, DataConfig(intensity="zscore", zscore_clip=2.0), None, "mem")
    assert z.min() >= -1 and z.max() <= 1 and z[0, 0, -2] == 1.0 and z[0, 0, -1] == -1.0
    mm = normalise(np.array([[[2.0, 4.0, 6.0]]], np.float32), DataConfig(intensity="minmax"), None, "mem")
    assert mm.tolist() == [[[-1.0, 0.0, 1.0]]]
    const = normalise(np.full((1, 2, 2), 7.0, np.float32), DataConfig(intensity="zscore"), None, "mem")
    assert (const == 0).all()


def test_npz_loader(tmp_path):
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = np.stack([np.full((28, 28), 10 * i, np.uint8) for i in range(n)])
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", **arrays)
    cfg = dict(name="m", format="npz", root=str(tmp_path), npz_file="mnist.npz", split="npz",
               class_names=["neg", "pos"], task="classification")
    b = load_dataset(cfg, {"image_size": 16})
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 6)
    assert b.train.images.shape == (12, 1, 16, 16) and b.train.masks is None and b.num_mask_classes == 0
    assert b.class_names == ["neg", "pos"]
    for k, i in enumerate(b.train.ids):
        row = int(i.split("_")[1])
        assert b.train.labels[k].item() == row % 2
        assert b.train.images[k].mean().item() == pytest.approx(10 * row / 255 * 2 - 1, abs=1e-5)


def _volume(seed: int, shape=(12, 10, 6)) -> tuple[np.ndarray, np.ndarray]:
    """[x, y, z] uint8 volume whose slice z=k has value 20k + seed, and a label cube in slices 2..3."""
    vol = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        vol[..., k] = 20 * k + seed
    vol[0, 0, :] = 255  # a marker voxel at x=0, y=0 to check orientation
    lab = np.zeros(shape, np.uint8)
    lab[3:8, 2:6, 2:4] = 1
    return vol, lab


def test_nifti_volumes_sliced_and_grouped(tmp_path):
    import nibabel as nib

    for p in range(5):
        vol, lab = _volume(p)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / f"patient{p:03d}_frame01.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / f"patient{p:03d}_frame01_gt.nii.gz")
    cfg = dict(name="acdc3d", format="nifti", root=str(tmp_path), images_dir="", image_glob="*.nii.gz",
               image_exclude=["*_gt.nii.gz"], masks_dir="", mask_pattern="{stem}_gt.nii.gz", mask_mode="index",
               num_mask_classes=2, split="random", val_fraction=0.0, test_fraction=0.2, slice_axis=2)
    b = load_dataset(cfg, {"image_size": None})
    assert len(b.train) + len(b.test) == 5 * 6 and len(b.test) == 6  # one whole volume in test
    test_vols = {i.rsplit("_slice_", 1)[0] for i in b.test.ids}
    train_vols = {i.rsplit("_slice_", 1)[0] for i in b.train.ids}
    assert len(test_vols) == 1 and not test_vols & train_vols
    k = b.train.ids.index(sorted(train_vols)[0] + "_slice_003")
    p = int(sorted(train_vols)[0][7:10])
    img = b.train.images[k, 0]
    assert img.shape == (10, 12)  # rows = y, columns = x
    assert img[0, 0].item() == 1.0 and img[5, 5].item() == pytest.approx((60 + p) / 255 * 2 - 1, abs=1e-6)
    assert b.train.masks[k, 2:6, 3:8].eq(1).all() and b.train.masks[k].sum().item() == 20
    labelled = load_dataset({**cfg, "volume_slices": "labelled"}, {"image_size": 8})
    assert sorted({i[-3:] for i in labelled.train.ids + labelled.test.ids}) == ["002", "003"]
    along_x = load_dataset({**cfg, "slice_axis": 0}, {"image_size": None})
    assert len(along_x.train) + len(along_x.test) == 5 * 12 and along_x.train.images.shape[-2:] == (6, 10)


def test_metaimage_matches_nifti_orientation(tmp_path):
    """SLiver07 layout via conf/dataset/sliver07.yaml; same voxels as NIfTI give the same 2D slices."""
    import nibabel as nib
    import SimpleITK as sitk

    (tmp_path / "mhd").mkdir()
    (tmp_path / "nii").mkdir()
    for p in range(1, 5):
        vol, lab = _volume(p)
        vol16 = vol.astype(np.int16) - 100  # signed CT-like values
        for arr, kind in ((vol16, "orig"), (lab, "seg")):
            sitk.WriteImage(sitk.GetImageFromArray(arr.transpose(2, 1, 0)),
                            str(tmp_path / "mhd" / f"liver-{kind}{p:03d}.mhd"), useCompression=False)
            nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nii" / f"liver-{kind}{p:03d}.nii.gz")
    assert (tmp_path / "mhd" / "liver-orig001.raw").is_file()
    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf/dataset/sliver07.yaml"), {"root": str(tmp_path / "mhd")})
    data = {"image_size": None, "intensity": "fixed", "fixed_range": [-100, 155]}
    mhd = load_dataset(cfg, data)
    assert mhd.num_mask_classes == 2 and mhd.meta["format"] == "metaimage"
    assert sorted({i[-3:] for i in mhd.train.ids}) == ["002", "003"]  # volume_slices: labelled
    nii = load_dataset(OmegaConf.merge(cfg, {"format": "nifti", "root": str(tmp_path / "nii"),
                                             "image_glob": "liver-orig*.nii.gz", "mask_pattern": "{stem}.nii.gz"}),
                       data)
    assert mhd.train.ids == nii.train.ids
    assert torch.equal(mhd.train.images, nii.train.images) and torch.equal(mhd.train.masks, nii.train.masks)
    assert mhd.train.images[0, 0, 0, 0].item() == 1.0  # marker voxel at x=0, y=0


def test_dicom_folder_8_and_16_bit_with_masks(tmp_path):
    (tmp_path / "dcm").mkdir()
    (tmp_path / "masks").mkdir()
    img12 = np.zeros((16, 12), np.uint16)
    img12[:, 6:] = 4095
    mask = np.zeros((16, 12), np.uint8)
    mask[4:12, 2:10] = 255
    for i in range(4):
        write_dicom(tmp_path / "dcm" / f"ct{i}.dcm", img12, 12)
        Image.fromarray(mask).save(tmp_path / "masks" / f"ct{i}.png")
    write_dicom(tmp_path / "dcm" / "ct4.dcm", img12, 12, "MONOCHROME1")
    Image.fromarray(mask).save(tmp_path / "masks" / "ct4.png")
    cfg = dict(name="dcm", format="dicom", root=str(tmp_path), images_dir="dcm", masks_dir="masks",
               mask_pattern="{stem}.png", split="random", val_fraction=0.0, test_fraction=0.4)
    b = load_dataset(cfg, {"image_size": None})
    ids = b.train.ids + b.test.ids
    images = torch.cat([b.train.images, b.test.images])
    masks = torch.cat([b.train.masks, b.test.masks])
    for k, i in enumerate(ids):
        left, right = images[k, 0, 0, 0].item(), images[k, 0, 0, -1].item()
        # fixed = / (2**BitsStored - 1): 12-bit max -> 1; MONOCHROME1 is inverted (bright = high signal)
        assert (left, right) == ((1.0, -1.0) if i == "ct4" else (-1.0, 1.0))
        assert masks[k].sum().item() == 64
    for i in range(3):
        write_dicom(tmp_path / "dcm" / f"ct{i}.dcm", (img12 // 16).astype(np.uint8), 8)
    b8 = load_dataset({**cfg, "masks_dir": None}, {"image_size": 8})
    assert b8.train.masks is None and b8.meta["source_max_values"] == ["255.0", "4095.0"]


def test_idrid_config_on_written_files(tmp_path):
    """IDRiD layout (split folders, RGB TIFF optic-disc masks in red) via conf/dataset/idrid.yaml."""
    disc = np.zeros((20, 30, 3), np.uint8)
    disc[5:15, 10:20, 0] = 255  # red only: luminance 76 < 127, so the channel max is what must be used
    for split, first in (("a. Training Set", 1), ("b. Testing Set", 10)):
        img_dir = tmp_path / "1. Original Images" / split
        mask_dir = tmp_path / "2. All Segmentation Groundtruths" / split / "5. Optic Disc"
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for i in range(first, first + 3):
            Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(img_dir / f"IDRiD_{i:02d}.jpg")
            Image.fromarray(disc).save(mask_dir / f"IDRiD_{i:02d}_OD.tif")
    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf/dataset/idrid.yaml"), {"root": str(tmp_path)})
    b = load_dataset(cfg, {"image_size": None})
    assert sorted(b.train.ids) == ["IDRiD_01", "IDRiD_02", "IDRiD_03"]
    assert sorted(b.test.ids) == ["IDRiD_10", "IDRiD_11", "IDRiD_12"]
    assert b.train.masks.sum(dim=(1, 2)).tolist() == [100, 100, 100]

"""Bring your own dataset: every layout of docs/datasets.md, built here from scratch, configured only by the guide's
yaml in a temporary --config-dir, passes `medsynbench dataset-check` and (some) a smoke run with the right downstream
task; each dataset-check warning; each load-time refusal of bad data (named file, printed once, exit code)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynbench.benchmark.data import DataError, load_dataset
from medsynbench.benchmark.data.check import check_dataset
from medsynbench.benchmark.data.config import DatasetConfig, keys_markdown
from tests.conftest import REPO, write_dicom

DOC = REPO / "docs" / "datasets.md"
CLI = [sys.executable, "-m", "medsynbench"]
# smoke run: 4 GAN steps at 32 px, tiny metrics, 2 downstream steps of the task that dataset.task selects
SMOKE_RUN = ["train=smoke", "data.image_size=32", "device=cpu", "metrics=smoke", "gan.g_filters=16", "gan.d_filters=16",
             "downstream.steps=2", "downstream.batch_size=4", "downstream.progress=false", "num_threads=1"]
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------ helpers
def guide_yaml(layout: str, root: Path) -> str:
    """The yaml the guide shows for a layout (after its <!-- byod:layout --> marker), with `root` set to ``root``."""
    text = DOC.read_text()
    block = re.search(rf"<!-- byod:{layout} -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, f"docs/datasets.md has no yaml block for layout {layout}"
    return re.sub(r"(?m)^root: \S+", f"root: {root}", block.group(1))


def config_dir(tmp_path: Path, layout: str, root: Path) -> tuple[Path, str]:
    """A user's config folder holding dataset/<name>.yaml exactly as the guide writes it."""
    text = guide_yaml(layout, root)
    name = re.search(r"(?m)^name: (\S+)", text).group(1)
    folder = tmp_path / "my_configs"
    (folder / "dataset").mkdir(parents=True, exist_ok=True)
    (folder / "dataset" / f"{name}.yaml").write_text(text)
    return folder, name


def cli(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDSYNBENCH_DEBUG", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey image with a bright disc, and the disc's 0/255 mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [size // 4]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = (rng.normal(60, 15, (size, size)) + 120 * disc).clip(0, 255).astype(np.uint8)
    return img, (disc * 255).astype(np.uint8)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.stack([img, (img * 0.8).astype(np.uint8), (img * 0.6).astype(np.uint8)], -1)


def _write_csv(path: Path, header, rows) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


# ------------------------------------------------------------------------------------------------ layouts
def build_seg_folder(root: Path, n: int = 24) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = _scene(24, i)
        Image.fromarray(_rgb(img)).save(root / "images" / f"case{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:03d}.png")


def build_seg_jpeg(root: Path, n: int = 24) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = _scene(24, 100 + i)
        Image.fromarray(_rgb(img)).save(root / "images" / f"case{i:03d}.jpg", quality=90)
        Image.fromarray(np.repeat(mask[..., None], 3, -1)).save(root / "masks" / f"case{i:03d}_mask.jpg", quality=75)


def build_class_folders(root: Path, n: int = 10, masks_beside: bool = True) -> None:
    for c, cls in enumerate(["benign", "malignant"]):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img, mask = _scene(24, 200 + 10 * c + i)
            img = (img.astype(np.float32) * (0.6 + 0.6 * c)).clip(0, 255).astype(np.uint8)  # classes differ
            Image.fromarray(img).save(root / cls / f"{cls} ({i}).png")
            if masks_beside:  # BUSI layout: the lesion mask lies beside its image
                Image.fromarray(mask).save(root / cls / f"{cls} ({i})_mask.png")


def build_csv_groups(root: Path, patients: int = 8, per_patient: int = 2) -> None:
    (root / "images").mkdir(parents=True)
    rows = []
    for p in range(patients):
        label = ["normal", "pneumonia"][p % 2]
        for k in range(per_patient):
            img, _ = _scene(24, 300 + p * 10 + k)
            img = (img.astype(np.float32) * (0.6 + 0.6 * (p % 2))).clip(0, 255).astype(np.uint8)
            name = f"p{p:02d}_{'ab'[k]}.png"
            Image.fromarray(img).save(root / "images" / name)
            rows.append([name, label, f"p{p:02d}"])
    _write_csv(root / "index.csv", ["file", "diagnosis", "patient"], rows)


def _volume(seed: int, shape=(24, 24, 4)) -> tuple[np.ndarray, np.ndarray]:
    img = np.stack([_scene(shape[0], seed * 10 + z)[0] for z in range(shape[2])], -1).astype(np.uint16)
    lab = np.stack([_scene(shape[0], seed * 10 + z)[1] > 0 for z in range(shape[2])], -1).astype(np.uint8)
    return img, lab


def build_nifti(root: Path, n: int = 4) -> None:
    import nibabel as nib

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img, lab = _volume(i)
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / "images" / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "labels" / f"case{i:02d}.nii.gz")


def build_metaimage(root: Path, n: int = 4) -> None:
    import SimpleITK as sitk

    root.mkdir(parents=True)
    for i in range(n):
        img, lab = _volume(50 + i)
        sitk.WriteImage(sitk.GetImageFromArray(img.T.copy()), str(root / f"case{i:02d}.mha"))  # sitk is [z, y, x]
        sitk.WriteImage(sitk.GetImageFromArray(lab.T.copy()), str(root / f"case{i:02d}_seg.mha"))


def build_dicom(root: Path, n: int = 24) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = _scene(24, 400 + i)
        write_dicom(root / "images" / f"im{i:02d}.dcm", img.astype(np.uint16) * 16, 12)
        Image.fromarray(mask).save(root / "masks" / f"im{i:02d}.png")


LAYOUTS = {
    # layout: (builder, task, expected classes)
    "seg_folder": (build_seg_folder, "segmentation", []),
    "seg_jpeg": (build_seg_jpeg, "segmentation", []),
    "class_folders": (build_class_folders, "classification", ["benign", "malignant"]),
    "csv_groups": (build_csv_groups, "classification", ["normal", "pneumonia"]),
    "nifti": (build_nifti, "segmentation", []),
    "metaimage": (build_metaimage, "segmentation", []),
    "dicom": (build_dicom, "segmentation", []),
}
SMOKE_LAYOUTS = ("seg_folder", "class_folders", "nifti")  # the others: @slow


# ------------------------------------------------------------------------------------------------ the guide
def test_guide_lists_every_dataset_key_and_the_generated_table():
    text = DOC.read_text()
    table = re.search(r"<!-- keys:begin -->\n(.*?)\n<!-- keys:end -->", text, re.S).group(1)
    assert table == keys_markdown(), "docs/datasets.md's key table is stale: regenerate it with keys_markdown()"
    for key in DatasetConfig.__dataclass_fields__:
        assert f"| `{key}` |" in table, key
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| `{key}` |"))
        assert row.rstrip(" |").split("|")[-1].strip(), f"dataset key {key} has no meaning in the table"
    assert "docs/datasets.md" in (REPO / "README.md").read_text()
    assert text.index("dataset-check") < text.index("## Step 2")  # the first thing the guide says to run


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_passes_dataset_check(tmp_path, layout):
    builder, task, classes = LAYOUTS[layout]
    root = tmp_path / "data"
    builder(root)
    folder, name = config_dir(tmp_path, layout, root)
    out = cli("dataset-check", "--config-dir", str(folder), f"dataset={name}", "data.image_size=32", "format=json",
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["dataset"] == name and report["task"] == task
    assert report["class_names"] == classes
    assert report["splits"]["train"]["loaded"] > 0 and report["splits"]["test"]["loaded"] > 0
    assert set(report["content_sha256"]) >= {"train", "test"}
    if task == "segmentation":
        assert report["masks"]["masks_with_foreground"] > 0
        assert any(c.startswith("masks: ") for c in report["conversions"])
    else:
        test_counts = report["class_counts"]["test"]
        assert all(test_counts[c] > 0 for c in classes)
    if layout == "seg_jpeg":
        assert any("lossy JPEG" in w for w in report["warnings"])
        assert any("lossy JPEG (3-channel) -> binary at 127" in c for c in report["conversions"])
    else:
        assert report["warnings"] == []
    if layout == "seg_jpeg":  # the text form, once
        text = cli("dataset-check", "--config-dir", str(folder), f"dataset={name}", "data.image_size=32", cwd=tmp_path)
        assert text.returncode == 0 and "train content sha256: " + report["content_sha256"]["train"] in text.stdout
        assert "masks are lossy JPEG" in text.stdout and text.stdout.rstrip().endswith("OK (2 warnings)")


def _smoke(tmp_path: Path, layout: str) -> dict:
    builder, task, classes = LAYOUTS[layout]
    root = tmp_path / "data"
    builder(root)
    folder, name = config_dir(tmp_path, layout, root)
    extra = ["data.intensity=minmax"] if layout in ("nifti", "metaimage") else []
    out = cli("train", "--config-dir", str(folder), f"dataset={name}", *SMOKE_RUN, *extra,
              f"paths.results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    (path,) = (tmp_path / "results" / "store" / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["dataset"] == name
    scores = {d["metric"] for d in record["downstream"] if not d.get("skipped")}
    real = {d["metric"] for d in record["downstream"] if d["train_on"] == "real" and not d.get("skipped")}
    if task == "segmentation":
        assert "dice_unet" in real, record["downstream"]
    else:
        assert {"acc_efficientnet", "auc_efficientnet"} <= real, record["downstream"]
        assert not any(m.startswith("dice") for m in scores)
    assert record["data"]["conversions"], "the record notes the conversions applied to the data"
    return record


@pytest.mark.parametrize("layout", SMOKE_LAYOUTS)
def test_layout_smoke_run_with_the_right_downstream_task(tmp_path, layout):
    record = _smoke(tmp_path, layout)
    if layout == "class_folders":
        assert record["data"]["class_counts"]["train"] == {"benign": 7, "malignant": 7}


@pytest.mark.slow
@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k not in SMOKE_LAYOUTS])
def test_layout_smoke_run_slow(tmp_path, layout):
    _smoke(tmp_path, layout)


# ------------------------------------------------------------------------------------------------ labels_from
def test_labels_from_folder(tmp_path):
    build_class_folders(tmp_path, n=6, masks_beside=False)
    bundle = load_dataset(dict(name="cf", root=str(tmp_path), images_dir="", labels_from="folder", task="classification",
                               test_fraction=0.34, val_fraction=0.0), {"image_size": 16})
    assert bundle.class_names == ["benign", "malignant"]
    ids = bundle.train.ids + bundle.test.ids
    labels = bundle.train.labels.tolist() + bundle.test.labels.tolist()
    assert all(bundle.class_names[lab] == i.split("/")[0] for i, lab in zip(ids, labels))
    assert bundle.meta["class_counts"]["test"] == {"benign": 2, "malignant": 2}  # stratified
    (tmp_path / "stray.png").write_bytes((tmp_path / "benign" / "benign (0).png").read_bytes())
    with pytest.raises(DataError, match="labels_from=folder"):
        load_dataset(dict(name="cf", root=str(tmp_path), images_dir="", labels_from="folder", image_glob="**/*.png"))
    with pytest.raises(DataError, match="label_column"):
        load_dataset(dict(name="cf", root=str(tmp_path), images_dir="", labels_from="folder", index_csv="x.csv",
                          label_column="y"))


# ------------------------------------------------------------------------------------------------ warnings
def _check(**cfg) -> dict:
    data = cfg.pop("data", {"image_size": 16})
    return check_dataset(dict(name="t", **cfg), data)


def test_warns_mask_files_among_images(tmp_path):
    build_class_folders(tmp_path, n=4)  # *_mask.png beside the images, no image_exclude
    report = _check(root=str(tmp_path), images_dir="", labels_from="folder", task="classification")
    (w,) = [w for w in report["warnings"] if "named like masks" in w]
    assert "benign (0)_mask.png" in w and "image_exclude" in w
    assert any("only two values" in w and "_mask.png" in w for w in report["warnings"])  # binary content too
    assert report["ok"]


def test_warns_binary_content_among_images(tmp_path):
    build_seg_folder(tmp_path, n=8)
    _, mask = _scene(24, 99)
    Image.fromarray(mask).save(tmp_path / "images" / "case099.png")  # a mask, named like an image
    Image.fromarray(mask).save(tmp_path / "masks" / "case099.png")
    report = _check(root=str(tmp_path), masks_dir="masks", mask_pattern="{stem}.png", test_fraction=0.25)
    (w,) = [w for w in report["warnings"] if "only two values" in w]
    assert "images/case099.png" in w and "case000" not in w


def test_warns_lossy_and_non_binary_masks_with_threshold(tmp_path):
    build_seg_jpeg(tmp_path, n=8)
    report = _check(root=str(tmp_path), masks_dir="masks", mask_pattern="{stem}_mask.jpg", test_fraction=0.25,
                    mask_threshold=100)
    lossy = [w for w in report["warnings"] if "lossy JPEG" in w]
    nonbinary = [w for w in report["warnings"] if "not binary" in w]
    assert lossy and "mask_threshold=100" in lossy[0]
    assert nonbinary and "case000_mask.jpg" in nonbinary[0] and "mask_threshold=100" in nonbinary[0]
    assert report["masks"]["distinct_values"] > 2


def test_warns_random_split_with_patient_column(tmp_path):
    build_csv_groups(tmp_path)
    cfg = dict(root=str(tmp_path), images_dir="images", index_csv="index.csv", id_column="file",
               label_column="diagnosis", task="classification")
    report = _check(**cfg)
    (w,) = [w for w in report["warnings"] if "group" in w]
    assert "index.csv" in w and "dataset.group_column=patient" in w
    assert not [w for w in _check(**cfg, group_column="patient")["warnings"] if "group" in w]


def test_warns_video_frames_in_a_random_split(tmp_path):
    (tmp_path / "images").mkdir()
    for video in ("video1", "video2", "video3"):
        for f in range(5):
            Image.fromarray(_scene(16, f)[0]).save(tmp_path / "images" / f"{video}_frame{f:04d}.png")
    report = _check(root=str(tmp_path), task="generation")
    (w,) = [w for w in report["warnings"] if "frame" in w]
    assert "video1_frame{0..4}" in w and "group_pattern" in w
    grouped = _check(root=str(tmp_path), task="generation", group_pattern=r"^(video\d+)_")
    assert not [w for w in grouped["warnings"] if "frame" in w]


def test_warns_class_imbalance_and_classification_without_labels(tmp_path):
    build_class_folders(tmp_path, n=10, masks_beside=False)
    for i in range(3, 10):  # 10 benign, 3 malignant: train 8:2
        (tmp_path / "malignant" / f"malignant ({i}).png").unlink()
    report = _check(root=str(tmp_path), images_dir="", labels_from="folder", task="classification",
                    test_fraction=0.25, val_fraction=0.0)
    imbalance = [w for w in report["warnings"] if "class imbalance" in w]
    assert imbalance and "'benign'" in imbalance[0]
    tolerant = check_dataset(dict(name="t", root=str(tmp_path), images_dir="", labels_from="folder",
                                  task="classification", test_fraction=0.25, val_fraction=0.0), {"image_size": 16},
                             imbalance_ratio=100.0)
    assert not [w for w in tolerant["warnings"] if "class imbalance" in w]
    unlabelled = _check(root=str(tmp_path), images_dir="", image_glob="*/*.png", task="classification")
    assert any("no labels" in w and "labels_from=folder" in w for w in unlabelled["warnings"])
    assert unlabelled["ok"]


# ------------------------------------------------------------------------------------------------ load-time errors
def _small_value_masks(root: Path) -> dict:
    build_seg_folder(root, n=8)
    for p in (root / "masks").glob("*.png"):
        m = np.asarray(Image.open(p))
        Image.fromarray(((m > 0) * np.where(np.arange(m.shape[1]) < 12, 1, 2)).astype(np.uint8)).save(p)
    return dict(masks_dir="masks", mask_pattern="{stem}.png")


def _nan_npz(root: Path) -> dict:
    root.mkdir(parents=True)
    imgs = RNG.random((6, 16, 16)).astype(np.float32)
    imgs[4, 3, 3] = np.nan
    np.savez(root / "data.npz", train_images=imgs, train_labels=np.arange(6) % 2,
             test_images=RNG.random((4, 16, 16)).astype(np.float32), test_labels=np.arange(4) % 2)
    return dict(format="npz", split="npz", task="classification")


def _nan_nifti(root: Path) -> dict:
    import nibabel as nib

    (root / "images").mkdir(parents=True)
    for i in range(4):
        vol = RNG.random((16, 16, 3)).astype(np.float32)
        if i == 2:
            vol[5, 5, 1] = np.inf
        nib.save(nib.Nifti1Image(vol, np.eye(4)), root / "images" / f"v{i}.nii.gz")
    return dict(format="nifti", task="generation", test_fraction=0.25, val_fraction=0.0)


def _non_utf8_name(root: Path) -> dict:
    build_seg_folder(root, n=6)
    bad = os.fsencode(root / "images") + b"/caf\xe9.png"
    with open(bad, "wb") as f:
        f.write((root / "images" / "case000.png").read_bytes())
    return dict(task="generation")


def _dangling_symlink(root: Path) -> dict:
    build_seg_folder(root, n=6)
    (root / "images" / "case005.png").unlink()
    (root / "images" / "case005.png").symlink_to(root / "elsewhere" / "case005.png")
    return dict(masks_dir="masks", mask_pattern="{stem}.png")


def _tiny_image(root: Path) -> dict:
    build_seg_folder(root, n=6)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "images" / "case003.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "masks" / "case003.png")
    return dict(masks_dir="masks", mask_pattern="{stem}.png")


BAD_DATA = {
    # case: (builder, what the message must say: the file and the problem)
    "small_value_masks": (_small_value_masks, [r"masks/case\d+\.png", "all background", "mask_threshold=0",
                                               "mask_mode=index"]),
    "nan_npz": (_nan_npz, [r"data\.npz\[train_images\]\[4\]", "NaN/inf"]),
    "nan_nifti": (_nan_nifti, [r"v2\.nii\.gz slice 1", "NaN/inf"]),
    "non_utf8_name": (_non_utf8_name, [r"caf\\xe9\.png", "not valid UTF-8"]),
    "dangling_symlink": (_dangling_symlink, [r"images/case005\.png", "broken symbolic link"]),
    "tiny_image": (_tiny_image, [r"images/case003\.png", "1x1", "min_image_side"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_loader_refuses_bad_data_naming_the_file(tmp_path, case):
    builder, patterns = BAD_DATA[case]
    cfg = builder(tmp_path / "data")
    with pytest.raises(DataError) as err:
        load_dataset(dict(name="bad", root=str(tmp_path / "data"), **cfg), {"image_size": 16, "intensity": "minmax"})
    for pattern in patterns:
        assert re.search(pattern, str(err.value)), (pattern, str(err.value))
    assert "orphan" not in str(err.value) and "match no image" not in str(err.value)


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_dataset_check_reports_bad_data_once_and_fails(tmp_path, case):
    builder, patterns = BAD_DATA[case]
    root = tmp_path / "data"
    cfg = builder(root)
    folder = tmp_path / "cfg" / "dataset"
    folder.mkdir(parents=True)
    (folder / "bad.yaml").write_text("\n".join(["name: bad", f"root: {root}", *(f"{k}: {json.dumps(v)}"
                                                                               for k, v in cfg.items())]))
    out = cli("dataset-check", "--config-dir", str(folder.parent), "dataset=bad", "data.intensity=minmax",
              "data.image_size=16", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "FAILED" in out.stdout
    first = re.search(patterns[0], out.stdout)
    assert first, out.stdout
    assert len(re.findall(re.escape(first.group(0)) + ".*" + re.escape(patterns[1].replace("\\", "")),
                          out.stdout)) == 1, out.stdout


def test_train_refuses_bad_data_with_one_message(tmp_path):
    cfg = _tiny_image(tmp_path / "data")
    folder = tmp_path / "cfg" / "dataset"
    folder.mkdir(parents=True)
    (folder / "bad.yaml").write_text(f"name: bad\nroot: {tmp_path / 'data'}\n" +
                                     "".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    out = cli("train", "--config-dir", str(folder.parent), "dataset=bad", *SMOKE_RUN,
              f"paths.results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert out.returncode != 0
    both = out.stdout + out.stderr
    assert "Traceback" not in both
    assert both.count("case003.png: image is only 1x1 pixels") == 1, both


def test_grouped_random_split_keeps_every_class_in_test(tmp_path):
    """Patients are split whole, and stratified by their class, so that a small test split still holds each class."""
    build_csv_groups(tmp_path, patients=8)
    bundle = load_dataset(dict(name="g", root=str(tmp_path), images_dir="images", index_csv="index.csv",
                               id_column="file", label_column="diagnosis", group_column="patient"), {"image_size": 16})
    assert bundle.meta["class_counts"]["test"] == {"normal": 2, "pneumonia": 2}
    patients = {s: {i.split("_")[0] for i in getattr(bundle, s).ids} for s in ("train", "val", "test")}
    assert not (patients["train"] & patients["test"]) and not (patients["train"] & patients["val"])

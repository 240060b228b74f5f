"""Schemas of the ``dataset`` and ``data`` config groups.

Every key is declared here with a type and a default so that Hydra (which registers these dataclasses as
structured-config schemas) rejects a misspelt key at compose time. ``load_dataset`` merges whatever it is given into
the same schemas, so plain dicts are validated identically.

``DatasetConfig`` says *where the data is and how it is laid out* (format, folders, masks, labels, splits).
``DataConfig`` says *what is done to it* (resize, colour, intensity normalisation, training-set size): everything
that changes pixel values is explicit here and recorded in ``bundle.meta["preprocessing"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING

FORMATS = ("folder", "npz", "nifti", "metaimage", "dicom")
SPLIT_SOURCES = ("random", "column", "files", "dirs", "npz")
SPLITS = ("train", "val", "test")
MASK_MODES = ("binary", "index")
UNLABELED_POLICIES = ("error", "drop")
LABEL_SOURCES = ("csv", "folder")
VOLUME_SLICES = ("all", "labelled")
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
COLORS = ("grayscale", "rgb", "native")
INTENSITIES = ("fixed", "minmax", "percentile", "zscore")


@dataclass
class DatasetConfig:
    """Where a dataset lives and how its files, masks, labels and splits are organised."""

    name: str = MISSING               # short name: the run id's prefix, leaderboards' dataset column
    format: str = "folder"            # folder | npz | nifti | metaimage | dicom
    root: str = MISSING               # dataset folder (npz: folder holding `npz_file`)
    task: str = "segmentation"        # segmentation | classification | generation (which downstream task fits)

    # --- image files (folder / dicom / nifti / metaimage) ---
    images_dir: str = "images"        # relative to root; "" = root itself; may contain {split} with split=dirs
    image_glob: str = "*"             # relative to images_dir; "**/*.jpeg" recurses
    image_exclude: List[str] = field(default_factory=list)  # file-name globs to skip, e.g. ["*_gt.nii.gz"]

    # --- masks ---
    masks_dir: Optional[str] = None   # null = no masks; "" = root; relative sub-folders of images are mirrored
    mask_pattern: str = "{name}"      # mask file name from the image's {stem}, {name} (with extension), {suffix}
    mask_stem_replace: List[str] = field(default_factory=list)  # [old, new] applied to {stem} (liver-orig -> liver-seg)
    mask_mode: str = "binary"         # binary: max over colour channels > mask_threshold -> 1; index: values are classes
    mask_threshold: int = 127         # binary masks (lossy JPEG masks such as Kvasir's need it)
    num_mask_classes: Optional[int] = None  # incl. background; null = 2 for binary, max value + 1 for index masks
    mask_class_names: List[str] = field(default_factory=list)   # e.g. [background, RV, myocardium, LV]

    # --- index CSV: labels / split column / patient column ---
    index_csv: Optional[str] = None   # relative to root
    id_column: str = "id"             # image id = path relative to images_dir, extension optional
    label_column: Optional[str] = None  # CSV column with the class label of each image
    split_column: Optional[str] = None  # CSV column with train / val / test (split=column)
    group_column: Optional[str] = None  # e.g. patient: splits never separate a group
    group_pattern: Optional[str] = None  # regex on the image id whose first group is the group (no CSV column)
    class_names: List[str] = field(default_factory=list)  # label order; empty = sorted label values
    unlabeled: str = "error"          # images without a label when label_column is set: error | drop
    labels_from: Optional[str] = None  # null/csv: label_column of index_csv | folder: class = first sub-folder of images_dir

    # --- splits ---
    split: str = "random"             # random | column | files | dirs | npz
    split_files: Dict[str, str] = field(default_factory=dict)  # {train: split_train.txt, ...}, one id a line
    split_dirs: Dict[str, str] = field(default_factory=dict)   # {train: "a. Training Set", ...} for {split}
    val_fraction: float = 0.1         # split=random only
    test_fraction: float = 0.2        # split=random only
    split_seed: int = 0               # split=random only

    # --- npz (MedMNIST layout: {split}_images, {split}_labels, optional {split}_masks) ---
    npz_file: str = "data.npz"        # file in root holding the arrays

    # --- volumes (nifti / metaimage) ---
    slice_axis: int = 2               # voxel axis i/j/k (0/1/2) to slice along; 2 = axial for RAS-ish volumes
    volume_slices: str = "all"        # all | labelled (only slices whose mask is not all background)

    # --- checks ---
    min_image_side: int = 4           # images (2D slices) smaller than this many pixels on a side are refused


@dataclass
class DataConfig:
    """Preprocessing and subset sizes; all of it is recorded in ``bundle.meta``."""

    image_size: Optional[int] = 64   # square side after resizing; null = keep native size (all must agree)
    resize_method: str = "bilinear"   # nearest | bilinear | bicubic | area | lanczos (masks: always nearest)
    color: str = "native"             # grayscale | rgb | native (channels as stored)
    intensity: str = "fixed"          # fixed | minmax | percentile | zscore -> always ends in [-1, 1]
    fixed_range: Optional[List[float]] = None  # fixed: [lo, hi] instead of [0, bit-depth max] (e.g. a CT window)
    percentiles: List[float] = field(default_factory=lambda: [0.5, 99.5])  # percentile: clip range per image
    zscore_clip: float = 3.0          # zscore: clip to +-k standard deviations, then divide by k
    train_size: Optional[int] = None  # null = whole train split; else nested, seeded, label-stratified subset
    subset_seed: int = 0
    val_size: Optional[int] = None    # cap on the validation split (fixed seeded subset); null = all
    test_size: Optional[int] = None   # cap on the test split for cheap CPU runs (fixed seeded subset); null = all
    eval_subset_seed: int = 0         # seed of the val/test caps (kept apart from subset_seed so tests stay fixed)


def schema_keys(schema=DatasetConfig) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every field of a schema dataclass, the meaning taken from the comment on the
    field's line in this file (one place to document a key; docs/datasets.md's key table is generated from it)."""
    import dataclasses
    import inspect
    import io
    import tokenize

    source = inspect.getsource(schema)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = []
    for f in dataclasses.fields(schema):
        row = next(i + 1 for i, ln in enumerate(lines) if ln.strip().startswith(f"{f.name}:"))
        if f.default is not dataclasses.MISSING:
            default = "required" if f.default == "???" else "null" if f.default is None else repr(f.default)
        else:
            default = repr(f.default_factory())  # type: ignore[misc]
        typ = str(f.type)
        if typ.startswith("Optional["):
            typ = typ[len("Optional["):-1] + " or null"
        typ = typ.replace("List[", "list[").replace("Dict[", "dict[")
        out.append((f.name, typ, default, comments.get(row, "")))
    return out


def keys_markdown(schema=DatasetConfig) -> str:
    """The Markdown table of a schema's keys (``python -c 'from medsynbench.benchmark.data.config import
    keys_markdown; print(keys_markdown())'`` regenerates the table in docs/datasets.md)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, meaning in schema_keys(schema):
        rows.append(f"| `{key}` | {typ} | `{default}` | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)

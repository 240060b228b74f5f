"""Discovery: which images a dataset has, with their masks, labels, splits and groups — no pixels decoded.

Each format yields a list of :class:`Item`. File formats (folder, dicom, nifti, metaimage) are found with a glob,
joined with an optional index CSV (labels, split column, patient column) and split files; volumes are then expanded
to one item per 2D slice. The npz format reads its arrays directly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from medsynbench.benchmark.data.config import SPLITS, DatasetConfig
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.io import (DICOM_SUFFIXES, METAIMAGE_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, full_suffix,
                                          printable, probe_volume, stem)

FORMAT_SUFFIXES = {
    "folder": PIL_SUFFIXES,
    "dicom": DICOM_SUFFIXES,
    "nifti": NIFTI_SUFFIXES,
    "metaimage": METAIMAGE_SUFFIXES,
}
MASK_SUFFIXES = PIL_SUFFIXES + (".dcm", ".dicom") + NIFTI_SUFFIXES + METAIMAGE_SUFFIXES
ALL_SUFFIXES = tuple(s for s in PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + METAIMAGE_SUFFIXES if s)
# file names that look like masks / annotations (image_mask.png, img_seg.png, Image_01L_1stHO.png, liver-seg001, _gt)
MASK_NAME_RX = re.compile(r"(?i)(?:^|[_\-. ()])(masks?|seg(?:mentation)?|gt|ground_?truth|labels?|annot(?:ation)?s?"
                          r"|manual\d*|\d(?:st|nd|rd|th)ho)(?:$|[_\-. ()]|\d)")


def looks_like_mask_name(path: Path) -> bool:
    return MASK_NAME_RX.search(stem(path)) is not None


@dataclass
class Item:
    """One 2D image of the dataset (before decoding)."""

    id: str
    image: Path                     # image file, volume file or npz file
    mask: Path | None = None
    label: str | None = None
    split: str | None = None
    group: str | None = None
    ref: object = None              # slice index (volumes) or (split, row) (npz)


def _few(values, n: int = 5) -> str:
    values = list(values)
    more = f" ... (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(str(v) for v in values[:n]) + more


def _subdir(root: Path, rel: str, split: str | None, cfg: DatasetConfig) -> Path:
    if "{split}" in rel:
        if split is None:
            raise DataError(f"dataset '{cfg.name}': folder '{rel}' contains {{split}} but dataset.split is not 'dirs'")
        rel = rel.replace("{split}", cfg.split_dirs[split])
    return root / rel if rel else root


# --------------------------------------------------------------------------------------------- files
def discover_files(cfg: DatasetConfig, root: Path) -> list[Item]:
    """All image files (one per split folder with split=dirs), paired with their masks."""
    if cfg.split == "dirs":
        missing = [s for s in ("train", "test") if s not in cfg.split_dirs]
        if missing or "{split}" not in cfg.images_dir:
            raise DataError(f"dataset '{cfg.name}': split=dirs needs dataset.split_dirs with train and test "
                            f"(missing: {missing}) and '{{split}}' in dataset.images_dir ('{cfg.images_dir}')")
        items = [it for s in SPLITS if s in cfg.split_dirs for it in _files(cfg, root, s)]
    else:
        items = _files(cfg, root, None)
    dup = _duplicates(it.id for it in items)
    if dup:
        raise DataError(f"{root}: image ids are not unique across split folders: {_few(dup)}")
    return items


def _files(cfg: DatasetConfig, root: Path, split: str | None) -> list[Item]:
    img_dir = _subdir(root, cfg.images_dir, split, cfg)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: images folder not found (dataset '{cfg.name}', images_dir='{cfg.images_dir}')")
    suffixes = FORMAT_SUFFIXES[cfg.format]
    glob = "*/*" if cfg.labels_from == "folder" and cfg.image_glob == "*" else cfg.image_glob
    found = [p for p in img_dir.glob(glob)
             if not p.name.startswith(".") and p.name != "DICOMDIR" and full_suffix(p) in suffixes
             and not any(fnmatch(p.name, pat) for pat in cfg.image_exclude)]
    _refuse_bad_names(img_dir, found)
    broken = sorted(p for p in found if p.is_symlink() and not p.exists())
    if broken:
        raise DataError(f"{printable(broken[0])}: broken symbolic link (its target {printable(broken[0].readlink())} "
                        f"does not exist){f'; {len(broken) - 1} more broken links' if len(broken) > 1 else ''}: "
                        "restore the files or delete the links")
    paths = sorted(p for p in found if p.is_file())
    if not paths:
        raise DataError(f"{img_dir}: no {cfg.format} image files matching '{glob}' "
                        f"(extensions {', '.join(s or '<none>' for s in suffixes)}); empty folder?")
    items = [Item(id=(p.relative_to(img_dir).parent / stem(p)).as_posix(), image=p, split=split) for p in paths]
    if cfg.labels_from == "folder":
        for it in items:
            parts = it.image.relative_to(img_dir).parts
            if len(parts) < 2:
                raise DataError(f"{it.image}: dataset.labels_from=folder needs every image in a class sub-folder of "
                                f"{img_dir} (e.g. benign/, malignant/); this one lies directly in it")
            it.label = parts[0]
    if cfg.masks_dir is None:
        return items
    mask_dir = _subdir(root, cfg.masks_dir, split, cfg)
    for it in items:
        it.mask = _mask_path(cfg, img_dir, mask_dir, it.image)
    claimed = {it.mask for it in items}
    if mask_dir == img_dir:  # masks beside their images: a mask file is not an image itself
        items = [it for it in items if it.image not in claimed]
    kind = "volume has no label volume" if cfg.format in ("nifti", "metaimage") else "image has no mask"
    missing = [it for it in items if not it.mask.is_file()]
    if missing:
        first = missing[0]
        if first.mask.is_symlink():
            raise DataError(f"{first.mask}: broken symbolic link (its target {first.mask.readlink()} does not exist); "
                            f"it is the mask of {first.image}")
        hint = (f"; {first.image.name} looks like a mask itself: leave such files out with dataset.image_exclude"
                if looks_like_mask_name(first.image) else "")
        raise DataError(f"{first.image}: {kind} (expected {first.mask}; dataset.mask_pattern='{cfg.mask_pattern}'"
                        f"){f'; {len(missing) - 1} more images lack one' if len(missing) > 1 else ''}{hint}")
    if not (_inside(mask_dir, img_dir) or _inside(img_dir, mask_dir)):
        orphans = sorted(p for p in mask_dir.rglob("*") if p.is_file() and full_suffix(p) in MASK_SUFFIXES
                         and p not in claimed)
        if orphans:
            raise DataError(f"{mask_dir}: {len(orphans)} mask files match no image ({_few(p.name for p in orphans)});"
                            f" a mask must be named dataset.mask_pattern='{cfg.mask_pattern}' after its image")
    return items


def _refuse_bad_names(folder: Path, paths: list[Path]) -> None:
    """File names must be UTF-8: ids enter hashes, records and logs (bytes from another system's encoding would
    crash them later, far from the cause)."""
    bad = []
    for p in paths:
        try:
            p.relative_to(folder).as_posix().encode("utf-8")
        except UnicodeEncodeError:
            bad.append(printable(p))
    if bad:
        raise DataError(f"{bad[0]}: file name is not valid UTF-8 ({len(bad)} such files: {_few(bad)}); rename them "
                        "to UTF-8 (e.g. `convmv -f latin1 -t utf8 -r --notest <folder>`) or move them out")


def _mask_path(cfg: DatasetConfig, img_dir: Path, mask_dir: Path, image: Path) -> Path:
    s = stem(image)
    if cfg.mask_stem_replace:
        if len(cfg.mask_stem_replace) != 2:
            raise DataError(f"dataset '{cfg.name}': mask_stem_replace must be [old, new], got {cfg.mask_stem_replace}")
        s = s.replace(cfg.mask_stem_replace[0], cfg.mask_stem_replace[1])
    try:
        name = cfg.mask_pattern.format(stem=s, name=image.name, suffix=full_suffix(image))
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(f"dataset '{cfg.name}': bad mask_pattern '{cfg.mask_pattern}' ({e!r}); "
                        "use {stem}, {name} and {suffix}") from None
    return mask_dir / image.relative_to(img_dir).parent / name


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _duplicates(values) -> list:
    seen, dup = set(), []
    for v in values:
        if v in seen:
            dup.append(v)
        seen.add(v)
    return dup


# ----------------------------------------------------------------------------------- CSV / split files
def _norm_id(value: str, cfg: DatasetConfig) -> str:
    """An id as written in a CSV or split file: path relative to images_dir, extension optional."""
    value = value.strip().replace("\\", "/")
    prefix = cfg.images_dir.strip("/") + "/"
    if cfg.images_dir and "{split}" not in cfg.images_dir and value.startswith(prefix):
        value = value[len(prefix):]
    p = Path(value)
    return (p.parent / stem(p)).as_posix() if full_suffix(p) in ALL_SUFFIXES else value


def join_index_csv(items: list[Item], cfg: DatasetConfig, root: Path) -> None:
    """Attach label / split / group columns of dataset.index_csv to the items (in place)."""
    import pandas as pd

    path = root / cfg.index_csv
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: index CSV not found (dataset.index_csv)") from None
    except Exception as e:
        raise DataError(f"{path}: unreadable CSV ({e})") from None
    wanted = {"id_column": cfg.id_column, "label_column": cfg.label_column, "split_column": cfg.split_column,
              "group_column": cfg.group_column}
    for key, col in wanted.items():
        if col is not None and col not in df.columns:
            raise DataError(f"{path}: no column '{col}' (dataset.{key}); columns are {list(df.columns)}")
    keys = [_norm_id(v, cfg) for v in df[cfg.id_column]]
    dup = _duplicates(keys)
    if dup:
        raise DataError(f"{path}: ids listed more than once: {_few(dup)}")
    by_id = {it.id: it for it in items}
    unknown = [k for k in keys if k not in by_id]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} rows name files that do not exist in the dataset's images "
                        f"({_few(unknown)})")
    for row, key in zip(df.to_dict("records"), keys):
        it = by_id[key]
        if cfg.label_column and row[cfg.label_column].strip():
            it.label = row[cfg.label_column].strip()
        if cfg.split_column:
            value = row[cfg.split_column].strip()
            if value not in SPLITS:
                raise DataError(f"{path}: split '{value}' for id '{key}' in column '{cfg.split_column}' "
                                f"is not one of {list(SPLITS)}")
            it.split = value
        if cfg.group_column:
            it.group = row[cfg.group_column].strip()


def apply_split_files(items: list[Item], cfg: DatasetConfig, root: Path, dropped: set[str] = frozenset()) -> None:
    """split=files: each file lists the ids of one split, one per line (blank lines and # comments ignored).

    ``dropped``: ids that exist but were left out on purpose (unlabelled with unlabeled=drop); they are skipped.
    """
    if not cfg.split_files:
        raise DataError(f"dataset '{cfg.name}': split=files needs dataset.split_files, e.g. "
                        "{train: split_train.txt, test: split_test.txt}")
    by_id = {it.id: it for it in items}
    for split, name in cfg.split_files.items():
        if split not in SPLITS:
            raise DataError(f"dataset '{cfg.name}': split_files key '{split}' is not one of {list(SPLITS)}")
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: split file not found (dataset.split_files.{split})")
        ids = [_norm_id(ln, cfg) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        ids = [i for i in ids if i not in dropped]
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(f"{path}: names {len(missing)} files that do not exist in the dataset's images "
                            f"({_few(missing)})")
        for i in ids:
            if by_id[i].split not in (None, split):
                raise DataError(f"{path}: id '{i}' is also in the {by_id[i].split} split file")
            by_id[i].split = split


def apply_groups(items: list[Item], cfg: DatasetConfig) -> None:
    """Group by dataset.group_pattern (regex on the id) when there is no group column."""
    if cfg.group_pattern is None or cfg.group_column is not None:
        return
    rx = re.compile(cfg.group_pattern)
    for it in items:
        m = rx.search(it.id)
        if m is None:
            raise DataError(f"{it.image}: id '{it.id}' does not match dataset.group_pattern '{cfg.group_pattern}'")
        it.group = m.group(1) if m.groups() else m.group(0)


def check_group_leakage(items: list[Item], source: str) -> None:
    """A patient (group) must never be on both sides of a split."""
    splits_of: dict[str, set[str]] = {}
    for it in items:
        if it.group is not None and it.split is not None:
            splits_of.setdefault(it.group, set()).add(it.split)
    leaked = {g: s for g, s in splits_of.items() if len(s) > 1}
    if leaked:
        g = sorted(leaked)[0]
        raise DataError(f"{source}: group '{g}' appears in splits {sorted(leaked[g])} ({len(leaked)} groups span "
                        "several splits); splits must be by group (patient), never by image or slice")


# ------------------------------------------------------------------------------------------- volumes
def expand_volumes(items: list[Item], cfg: DatasetConfig) -> list[Item]:
    """One item per 2D slice along dataset.slice_axis; slices inherit label, split and group of their volume."""
    from medsynbench.benchmark.data.io import read_volume

    if cfg.slice_axis not in (0, 1, 2):
        raise DataError(f"dataset '{cfg.name}': slice_axis must be 0, 1 or 2, got {cfg.slice_axis}")
    out = []
    for it in items:
        shape = probe_volume(it.image)
        plane = tuple(n for a, n in enumerate(shape) if a != cfg.slice_axis)
        if min(plane) < cfg.min_image_side:
            raise DataError(f"{it.image}: slices along axis {cfg.slice_axis} are only {plane[0]}x{plane[1]} voxels "
                            f"(volume {shape}), smaller than dataset.min_image_side={cfg.min_image_side}; "
                            "wrong dataset.slice_axis?")
        if it.mask is not None and probe_volume(it.mask) != shape:
            raise DataError(f"{it.mask}: label volume shape {probe_volume(it.mask)} does not match its image "
                            f"volume {it.image} {shape}")
        keep = range(shape[cfg.slice_axis])
        if cfg.volume_slices == "labelled":
            if it.mask is None:
                raise DataError(f"dataset '{cfg.name}': volume_slices=labelled needs label volumes (masks_dir)")
            m = read_volume(it.mask).array != 0
            other = tuple(a for a in range(3) if a != cfg.slice_axis)
            keep = np.flatnonzero(m.any(axis=other)).tolist()
        group = it.group if it.group is not None else it.id
        out += [replace(it, id=f"{it.id}_slice_{k:03d}", group=group, ref=int(k)) for k in keep]
    return out


# ----------------------------------------------------------------------------------------------- npz
def discover_npz(cfg: DatasetConfig, root: Path) -> tuple[list[Item], dict[str, np.ndarray]]:
    """MedMNIST layout: {split}_images [N,H,W(,C)], {split}_labels [N] or [N,1], optional {split}_masks."""
    path = root / cfg.npz_file if root.is_dir() else root
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: npz file not found (dataset.root / dataset.npz_file)") from None
    except Exception as e:
        raise DataError(f"{path}: unreadable npz file ({e})") from None
    if "train_images" not in arrays or "test_images" not in arrays:
        raise DataError(f"{path}: npz needs train_images and test_images arrays; it has {sorted(arrays)}")
    items = []
    for split in SPLITS:
        imgs = arrays.get(f"{split}_images")
        if imgs is None:
            continue
        if imgs.ndim not in (3, 4) or len(imgs) == 0:
            raise DataError(f"{path}: {split}_images must be a non-empty [N,H,W] or [N,H,W,C] array, "
                            f"got shape {imgs.shape}")
        labels = arrays.get(f"{split}_labels")
        if labels is not None:
            labels = labels.reshape(len(labels), -1)
            if labels.shape != (len(imgs), 1):
                raise DataError(f"{path}: {split}_labels has shape {arrays[f'{split}_labels'].shape}, expected "
                                f"({len(imgs)},) or ({len(imgs)}, 1) (one class index per image)")
            arrays[f"{split}_labels"] = labels[:, 0]
        masks = arrays.get(f"{split}_masks")
        if masks is not None and masks.shape[:3] != imgs.shape[:3]:
            raise DataError(f"{path}: {split}_masks shape {masks.shape} does not match {split}_images {imgs.shape}")
        for i in range(len(imgs)):
            label = None if labels is None else str(int(arrays[f"{split}_labels"][i]))
            items.append(Item(id=f"{split}_{i:05d}", image=path, label=label, split=split, ref=(split, i),
                              mask=path if masks is not None else None))
    return items, arrays

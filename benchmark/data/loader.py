"""``load_dataset``: dataset config + preprocessing config -> :class:`DatasetBundle`.

Steps, all before any training: validate the configs; discover items (no pixels); attach labels, splits and groups;
check that no patient spans two splits; check every file's header (image/mask sizes); pick the nested training
subset and the fixed val/test subsets; decode and preprocess only those images; record everything in ``meta``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medsynbench.benchmark.data import io, preprocess, sources
from medsynbench.benchmark.data.config import (COLORS, FORMATS, INTENSITIES, MASK_MODES, RESIZE_METHODS, SPLIT_SOURCES, SPLITS,
                                   UNLABELED_POLICIES, VOLUME_SLICES, DataConfig, DatasetConfig)
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.sources import Item
from medsynbench.benchmark.data.splits import ids_sha256, nested_order, random_split
from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from medsynbench.io import array_hash

log = logging.getLogger(__name__)
VOLUME_FORMATS = ("nifti", "metaimage")


def load_dataset(dataset_cfg, data_cfg=None) -> DatasetBundle:
    """Load, validate, split, subsample and preprocess a dataset.

    ``dataset_cfg`` / ``data_cfg``: the composed Hydra ``dataset`` / ``data`` groups (DictConfig, dict or the
    dataclasses of :mod:`benchmark.data.config`). Raises :class:`DataError` naming the file and the problem.
    """
    ds = _as_config(DatasetConfig, dataset_cfg, "dataset")
    pp = _as_config(DataConfig, data_cfg if data_cfg is not None else {}, "data")
    _check_choices(ds, pp)
    root = Path(ds.root).expanduser().resolve()
    if not root.exists():
        raise DataError(f"{root}: dataset root not found (dataset '{ds.name}'); set dataset.root=... "
                        "or the MEDSYNBENCH_SHARED_DATA environment variable")

    items, arrays = _discover(ds, root)
    all_ids = {it.id for it in items}
    items, class_names, n_unlabeled = _labels(items, ds, root)
    _assign_splits(items, ds, root, dropped=all_ids - {it.id for it in items})
    sources.check_group_leakage(items, str(root / ds.index_csv) if ds.index_csv else str(root))
    unassigned = sum(it.split is None for it in items)
    items = [it for it in items if it.split is not None]
    if ds.format in VOLUME_FORMATS:
        items = sources.expand_volumes(items, ds)
    else:
        _check_headers(items, ds)

    by_split = {s: [it for it in items if it.split == s] for s in SPLITS}
    for s in ("train", "test"):
        if not by_split[s]:
            raise DataError(f"{root}: the {s} split of dataset '{ds.name}' is empty (split={ds.split})")
    label_of = {name: i for i, name in enumerate(class_names)}
    chosen = {
        "train": _take(by_split["train"], pp.train_size, pp.subset_seed, label_of, "train_size", ds.name),
        "val": _take(by_split["val"], pp.val_size, pp.eval_subset_seed, label_of, "val_size", ds.name),
        "test": _take(by_split["test"], pp.test_size, pp.eval_subset_seed, label_of, "test_size", ds.name),
    }
    decoded = _decode([it for s in SPLITS for it in chosen[s]], ds, pp, arrays)
    num_mask_classes, mask_source = _mask_classes(ds, decoded)
    sets = {s: _image_set(chosen[s], decoded, label_of) for s in SPLITS if chosen[s]}

    meta = {
        "dataset": ds.name,
        "format": ds.format,
        "task": ds.task,
        "root": str(root.resolve()),
        "preprocessing": preprocess.describe(pp),
        "split_source": ds.split,
        "split_seed": ds.split_seed if ds.split == "random" else None,
        "split_sizes": {s: len(by_split[s]) for s in SPLITS},
        "counts": {s: len(chosen[s]) for s in SPLITS},
        "train_size": pp.train_size,
        "subset_seed": pp.subset_seed,
        "val_size": pp.val_size,
        "test_size": pp.test_size,
        "eval_subset_seed": pp.eval_subset_seed,
        "train_ids_sha256": ids_sha256([it.id for it in chosen["train"]]),
        "val_ids_sha256": ids_sha256([it.id for it in chosen["val"]]),
        "test_ids_sha256": ids_sha256([it.id for it in chosen["test"]]),
        "train_split_ids_sha256": ids_sha256([it.id for it in by_split["train"]]),
        # what the GAN and the metrics actually see: decoded, preprocessed pixels + masks + labels (part of a run's
        # training id, so another folder's data, a fixed mask or a changed label never resumes an old run)
        **{f"{s}_content_sha256": content_sha256(sets[s]) for s in SPLITS if s in sets},
        "class_counts": {s: _counts(chosen[s], class_names) for s in SPLITS} if class_names else {},
        "mask_mode": ds.mask_mode if ds.masks_dir is not None or _npz_masks(arrays) else None,
        "num_mask_classes_source": mask_source,
        "mask_class_names": list(ds.mask_class_names),
        "excluded": {"unlabeled": n_unlabeled, "unassigned": unassigned},
        "validation": f"headers of all {len(items)} {'slices' if ds.format in VOLUME_FORMATS else 'images'} "
                      f"checked (npz: array shapes), pixels of the {len(decoded)} loaded images decoded",
        "source_max_values": sorted({str(d[2]) for d in decoded.values()}),
    }
    log.info("loaded %s: train %d/%d, val %d, test %d", ds.name, len(chosen["train"]), len(by_split["train"]),
             len(chosen["val"]), len(chosen["test"]))
    return DatasetBundle(name=ds.name, train=sets["train"], test=sets["test"], val=sets.get("val"),
                         num_mask_classes=num_mask_classes, class_names=class_names, meta=meta)


# ------------------------------------------------------------------------------------------ config
def _as_config(schema, cfg, group: str):
    """Merge into the dataclass schema (unknown keys and wrong types fail here, as in Hydra) and resolve."""
    if isinstance(cfg, schema):
        cfg = OmegaConf.structured(cfg)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        missing = [k for k in merged if OmegaConf.is_missing(merged, k)]
        if missing:
            name = merged.name if not OmegaConf.is_missing(merged, "name") else "?"
            hint = " (this dataset is not staged: set dataset.root=/path/to/it)" if "root" in missing else ""
            raise DataError(f"{group} config of '{name}': {', '.join(f'{group}.{k}' for k in missing)} "
                            f"must be set{hint}")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise DataError(f"{group} config: {str(e).splitlines()[0]}") from None


def _check_choices(ds: DatasetConfig, pp: DataConfig) -> None:
    choices = [(ds, "format", FORMATS), (ds, "split", SPLIT_SOURCES), (ds, "mask_mode", MASK_MODES),
               (ds, "unlabeled", UNLABELED_POLICIES), (ds, "volume_slices", VOLUME_SLICES),
               (pp, "resize_method", RESIZE_METHODS), (pp, "color", COLORS), (pp, "intensity", INTENSITIES)]
    for obj, key, allowed in choices:
        value = getattr(obj, key)
        if value not in allowed:
            group = "dataset" if obj is ds else "data"
            raise DataError(f"{group}.{key}={value!r} is not one of {list(allowed)} (dataset '{ds.name}')")
    if (ds.format == "npz") != (ds.split == "npz"):
        raise DataError(f"dataset '{ds.name}': format=npz goes with split=npz (the arrays define the splits)")
    if pp.image_size is not None and pp.image_size < 1:
        raise DataError(f"data.image_size must be positive or null, got {pp.image_size}")
    if len(pp.percentiles) != 2 or not 0 <= pp.percentiles[0] < pp.percentiles[1] <= 100:
        raise DataError(f"data.percentiles must be [low, high] with 0 <= low < high <= 100, got {pp.percentiles}")
    if pp.fixed_range is not None and (len(pp.fixed_range) != 2 or pp.fixed_range[0] >= pp.fixed_range[1]):
        raise DataError(f"data.fixed_range must be [lo, hi] with lo < hi, got {pp.fixed_range}")
    if pp.zscore_clip <= 0:
        raise DataError(f"data.zscore_clip must be > 0, got {pp.zscore_clip}")
    for f in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(ds, f) < 1:
            raise DataError(f"dataset.{f} must be in [0, 1), got {getattr(ds, f)}")


# --------------------------------------------------------------------------------- items and splits
def _discover(ds: DatasetConfig, root: Path) -> tuple[list[Item], dict]:
    if ds.format == "npz":
        return sources.discover_npz(ds, root)
    items = sources.discover_files(ds, root)
    if ds.index_csv:
        sources.join_index_csv(items, ds, root)
    elif ds.label_column or ds.split_column or ds.group_column:
        raise DataError(f"dataset '{ds.name}': label/split/group columns are set but dataset.index_csv is not")
    sources.apply_groups(items, ds)
    return items, {}


def _labels(items: list[Item], ds: DatasetConfig, root: Path) -> tuple[list[Item], list[str], int]:
    """Drop/refuse unlabelled images and fix the class order (configured, or sorted label values)."""
    labelled = ds.format == "npz" and any(it.label is not None for it in items) or bool(ds.label_column)
    if not labelled:
        return items, [], 0
    source = root / ds.index_csv if ds.index_csv else root
    missing = [it for it in items if it.label is None]
    if missing and ds.unlabeled == "error":
        raise DataError(f"{source}: no label in column '{ds.label_column}' for {len(missing)} images "
                        f"({sources._few(it.id for it in missing)}); set dataset.unlabeled=drop to leave them out")
    items = [it for it in items if it.label is not None]
    if ds.format == "npz":
        top = max(int(it.label) for it in items)
        names = list(ds.class_names) or [str(i) for i in range(top + 1)]
        if top >= len(names):
            raise DataError(f"{source}: label value {top} but dataset.class_names has {len(names)} names {names}")
        for it in items:
            it.label = names[int(it.label)]
        return items, names, len(missing)
    values = sorted({it.label for it in items})
    names = list(ds.class_names) or values
    unknown = [v for v in values if v not in names]
    if unknown:
        raise DataError(f"{source}: labels {unknown} in column '{ds.label_column}' are not in dataset.class_names "
                        f"{names}")
    return items, names, len(missing)


def _assign_splits(items: list[Item], ds: DatasetConfig, root: Path, dropped: set[str]) -> None:
    if ds.split == "column":
        if not ds.split_column:
            raise DataError(f"dataset '{ds.name}': split=column needs dataset.index_csv and dataset.split_column")
    elif ds.split == "files":
        sources.apply_split_files(items, ds, root, dropped)
    elif ds.split == "random":
        groups = None
        if ds.format in VOLUME_FORMATS or any(it.group is not None for it in items):
            groups = [it.group if it.group is not None else it.id for it in items]
        labels = [it.label for it in items] if any(it.label is not None for it in items) else None
        for it, s in zip(items, random_split([it.id for it in items], groups, labels, ds.val_fraction,
                                             ds.test_fraction, ds.split_seed)):
            it.split = s


def _check_headers(items: list[Item], ds: DatasetConfig) -> None:
    """Every image opens and every mask has its image's size (headers only; cheap for thousands of files)."""
    if ds.format == "npz":
        return
    for it in items:
        size = io.probe_size(it.image)
        if it.mask is not None:
            msize = io.probe_size(it.mask)
            if msize != size:
                raise DataError(f"{it.mask}: mask size {msize[1]}x{msize[0]} does not match its image {it.image} "
                                f"({size[1]}x{size[0]}, WxH)")


def _take(items: list[Item], size: int | None, seed: int, label_of: dict, key: str, name: str) -> list[Item]:
    """First `size` items (None = all) of the seeded, label-stratified ordering: nested across sizes."""
    split = key.split("_")[0]
    if size is not None and size < 1:
        raise DataError(f"data.{key} must be >= 1 or null, got {size}")
    if size is not None and size > len(items):
        raise DataError(f"data.{key}={size} but the {split} split of dataset '{name}' has only {len(items)} images")
    labels = [label_of[it.label] for it in items] if label_of else None
    order = nested_order([it.id for it in items], labels, seed)
    return [items[i] for i in order[:size]]


# ------------------------------------------------------------------------------------------- pixels
def _decode(items: list[Item], ds: DatasetConfig, pp: DataConfig, arrays: dict) -> dict:
    """id -> (image [C,S,S] float32, mask [S,S] int64 or None, max_value). Volumes are read once each."""
    out = {}
    volumes: dict[str, tuple[Path | None, object]] = {"image": (None, None), "mask": (None, None)}

    def volume(kind: str, path: Path) -> io.Raw:
        if volumes[kind][0] != path:
            volumes[kind] = (path, io.read_volume(path))
        return volumes[kind][1]

    for it in sorted(items, key=lambda it: (str(it.image), str(it.ref))):
        if ds.format == "npz":
            split, row = it.ref
            arr = arrays[f"{split}_images"][row]
            raw = io.Raw(arr, io.dtype_max(arr.dtype))
            mask = arrays[f"{split}_masks"][row] if it.mask is not None else None
            source = f"{it.image}[{split}_images][{row}]"
        elif ds.format in VOLUME_FORMATS:
            vol = volume("image", it.image)
            raw = io.Raw(io.volume_slice(vol.array, ds.slice_axis, it.ref), vol.max_value)
            mask = None if it.mask is None else io.volume_slice(volume("mask", it.mask).array, ds.slice_axis, it.ref)
            source = f"{it.image} slice {it.ref}"
        else:
            raw = io.read_2d(it.image)
            mask = None if it.mask is None else io.read_mask_2d(it.mask)
            source = str(it.image)
        image = preprocess.preprocess_image(raw.array, raw.max_value, pp, source)
        if mask is not None:
            msource = str(it.mask) if ds.format not in VOLUME_FORMATS else f"{it.mask} slice {it.ref}"
            if mask.shape[:2] != raw.array.shape[:2]:
                raise DataError(f"{msource}: mask size {mask.shape[:2]} does not match its image {source} "
                                f"{raw.array.shape[:2]}")
            mask = preprocess.mask_to_classes(mask, ds.mask_mode, ds.mask_threshold, msource)
            mask = preprocess.resize_mask(mask, pp.image_size)
        out[it.id] = (image, mask, raw.max_value, source)
    return out


def _mask_classes(ds: DatasetConfig, decoded: dict) -> tuple[int, str | None]:
    masks = [(d[1], d[3]) for d in decoded.values() if d[1] is not None]
    if not masks:
        return 0, None
    if ds.mask_mode == "binary":
        if ds.num_mask_classes not in (None, 2):
            raise DataError(f"dataset '{ds.name}': mask_mode=binary gives 2 classes, num_mask_classes says "
                            f"{ds.num_mask_classes}")
        return 2, "binary"
    top_mask, top_src = max(((int(m.max()), s) for m, s in masks), key=lambda t: t[0])
    if ds.num_mask_classes is not None:
        if top_mask >= ds.num_mask_classes:
            raise DataError(f"{top_src}: mask value {top_mask} but dataset.num_mask_classes={ds.num_mask_classes} "
                            "(class indices must be < num_mask_classes, background 0 included)")
        return ds.num_mask_classes, "declared"
    return max(top_mask + 1, 2), "inferred from the loaded masks (max value + 1)"


def _image_set(items: list[Item], decoded: dict, label_of: dict) -> ImageSet:
    first = decoded[items[0].id]
    for it in items:
        img = decoded[it.id][0]
        if img.shape != first[0].shape:
            raise DataError(f"{decoded[it.id][3]}: preprocessed shape {img.shape} differs from {first[3]} "
                            f"{first[0].shape}; set data.color=rgb|grayscale and/or data.image_size")
    images = torch.from_numpy(np.stack([decoded[it.id][0] for it in items]))
    masks = None
    if first[1] is not None:
        masks = torch.from_numpy(np.stack([decoded[it.id][1] for it in items]).astype(np.int64))
    labels = torch.tensor([label_of[it.label] for it in items], dtype=torch.int64) if label_of else None
    return ImageSet(images=images, masks=masks, labels=labels, ids=[it.id for it in items])


def content_sha256(images: ImageSet) -> str:
    """SHA-256 of an image set's decoded content (images, masks, labels, in order). Hashing the tensors after
    preprocessing covers the files' bytes, the decoder and the preprocessing at once, costs 1-2 s per GB of decoded
    data on one core, and does not depend on where the files lie (a moved copy of the same data has the same hash)."""
    return array_hash(images.images, images.masks, images.labels)


def _counts(items: list[Item], class_names: list[str]) -> dict[str, int]:
    return {c: sum(it.label == c for it in items) for c in class_names}


def _npz_masks(arrays: dict) -> bool:
    return any(k.endswith("_masks") for k in arrays)


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
from medsynbench.benchmark.data.config import (COLORS, FORMATS, INTENSITIES, LABEL_SOURCES, MASK_MODES, RESIZE_METHODS,
                                              SPLIT_SOURCES, SPLITS, UNLABELED_POLICIES, VOLUME_SLICES, DataConfig,
                                              DatasetConfig)
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.sources import Item
from medsynbench.benchmark.data.splits import ids_sha256, nested_order, random_split
from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from medsynbench.io import array_hash

log = logging.getLogger(__name__)
VOLUME_FORMATS = ("nifti", "metaimage")


def load_dataset(dataset_cfg, data_cfg=None, report: dict | None = None) -> DatasetBundle:
    """Load, validate, split, subsample and preprocess a dataset.

    ``dataset_cfg`` / ``data_cfg``: the composed Hydra ``dataset`` / ``data`` groups (DictConfig, dict or the
    dataclasses of :mod:`benchmark.data.config`). Raises :class:`DataError` naming the file and the problem.
    ``report``: a dict that, when given, is filled step by step with what was found (configs, items, image modes and
    sizes, raw mask values...) for ``medsynbench dataset-check`` (:mod:`benchmark.data.check`); what is there when a
    DataError is raised describes the data up to that point.
    """
    report = {} if report is None else report
    ds = _as_config(DatasetConfig, dataset_cfg, "dataset")
    pp = _as_config(DataConfig, data_cfg if data_cfg is not None else {}, "data")
    report.update(dataset=ds, data=pp)
    _check_choices(ds, pp)
    root = Path(ds.root).expanduser().resolve()
    report["root"] = root
    if not root.exists():
        raise DataError(f"{root}: dataset root not found (dataset '{ds.name}'); set dataset.root=... "
                        "or the MEDSYNBENCH_SHARED_DATA environment variable")

    items, arrays = _discover(ds, root)
    report["items"] = items
    all_ids = {it.id for it in items}
    items, class_names, n_unlabeled = _labels(items, ds, root)
    _assign_splits(items, ds, root, dropped=all_ids - {it.id for it in items})
    report["items"] = items
    sources.check_group_leakage(items, str(root / ds.index_csv) if ds.index_csv else str(root))
    unassigned = sum(it.split is None for it in items)
    items = [it for it in items if it.split is not None]
    if ds.format in VOLUME_FORMATS:
        n_volumes = len(items)
        items = sources.expand_volumes(items, ds)
    else:
        _check_headers(items, ds, arrays)
    report["slices"] = items

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
    stats = report.setdefault("decode", _new_stats())
    decoded = _decode([it for s in SPLITS for it in chosen[s]], ds, pp, arrays, stats)
    _check_binary_masks(ds, stats)
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
        # what was done to the stored pixels to get here, in words (beside the preprocessing settings above)
        "conversions": _conversions(ds, pp, stats, n_volumes if ds.format in VOLUME_FORMATS else None, len(items)),
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
    if ds.labels_from not in (None, *LABEL_SOURCES):
        raise DataError(f"dataset.labels_from={ds.labels_from!r} is not one of {[None, *LABEL_SOURCES]} "
                        f"(dataset '{ds.name}')")
    if ds.labels_from == "folder" and (ds.label_column or ds.format in ("npz", *VOLUME_FORMATS)):
        raise DataError(f"dataset '{ds.name}': labels_from=folder takes the class from each image's sub-folder; "
                        + ("it does not go with dataset.label_column (labels from the CSV)" if ds.label_column else
                           f"format={ds.format} has no class sub-folders (use index_csv + label_column)"))
    if ds.labels_from == "csv" and not (ds.index_csv and ds.label_column):
        raise DataError(f"dataset '{ds.name}': labels_from=csv needs dataset.index_csv and dataset.label_column")
    if ds.min_image_side < 1:
        raise DataError(f"dataset.min_image_side must be >= 1, got {ds.min_image_side}")
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
    labelled = (ds.format == "npz" and any(it.label is not None for it in items) or bool(ds.label_column)
                or ds.labels_from == "folder")
    if not labelled:
        return items, [], 0
    source = root / ds.index_csv if ds.index_csv else root
    where = "class sub-folders" if ds.labels_from == "folder" else f"column '{ds.label_column}'"
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
        raise DataError(f"{source}: labels {unknown} in {where} are not in dataset.class_names {names}")
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


def _check_headers(items: list[Item], ds: DatasetConfig, arrays: dict) -> None:
    """Every image opens, is not tiny, and every mask has its image's size (headers only; cheap for thousands)."""
    if ds.format == "npz":
        for key in sorted(k for k in arrays if k.endswith("_images")):
            check_min_side(arrays[key].shape[1:3], f"{items[0].image}[{key}]", ds)
        return
    for it in items:
        size = io.probe_size(it.image)
        check_min_side(size, str(it.image), ds)
        if it.mask is not None:
            msize = io.probe_size(it.mask)
            if msize != size:
                raise DataError(f"{it.mask}: mask size {msize[1]}x{msize[0]} does not match its image {it.image} "
                                f"({size[1]}x{size[0]}, WxH)")


def check_min_side(size: tuple[int, int], source: str, ds: DatasetConfig) -> None:
    """A 1x1 (or 4x4) image would be silently upsampled to data.image_size: refuse it."""
    if min(size) < ds.min_image_side:
        raise DataError(f"{source}: image is only {size[1]}x{size[0]} pixels (WxH), smaller than "
                        f"dataset.min_image_side={ds.min_image_side}; remove it (or exclude it with "
                        "dataset.image_exclude), or lower dataset.min_image_side if such images are intended")


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
def _new_stats() -> dict:
    from collections import Counter

    return {"image_modes": Counter(), "image_sizes": Counter(), "image_channels": Counter(), "notes": Counter(),
            "binary_images": [], "mask_values": Counter(), "mask_suffixes": Counter(), "mask_channels": Counter(),
            "nonbinary_masks": [], "masks_emptied": [], "mask_foreground": 0, "mask_raw_max": None, "n_masks": 0,
            "resized": 0, "upsampled": [], "decoded": 0}


def _finite(array: np.ndarray, source: str, what: str) -> None:
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        bad = array.size - int(np.isfinite(array).sum())
        raise DataError(f"{source}: {what} holds {bad} NaN/inf values (of {array.size}); a GAN trained on it would "
                        "only diverge: fix or remove it")


def _decode(items: list[Item], ds: DatasetConfig, pp: DataConfig, arrays: dict, stats: dict | None = None) -> dict:
    """id -> (image [C,S,S] float32, mask [S,S] int64 or None, max_value, source). Volumes are read once each.
    ``stats`` collects what the stored data looked like (modes, sizes, raw mask values) and what was converted."""
    stats = _new_stats() if stats is None else stats
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
            raw = io.Raw(arr, io.dtype_max(arr.dtype), f"npz {arr.dtype}")
            mask = arrays[f"{split}_masks"][row] if it.mask is not None else None
            source = f"{it.image}[{split}_images][{row}]"
        elif ds.format in VOLUME_FORMATS:
            vol = volume("image", it.image)
            raw = io.Raw(io.volume_slice(vol.array, ds.slice_axis, it.ref), vol.max_value, vol.mode)
            mask = None if it.mask is None else io.volume_slice(volume("mask", it.mask).array, ds.slice_axis, it.ref)
            source = f"{it.image} slice {it.ref}"
        else:
            raw = io.read_2d(it.image)
            mask = None if it.mask is None else io.read_mask_2d(it.mask)
            source = str(it.image)
        _finite(raw.array, source, "image")
        _image_stats(raw, source, pp, stats)
        image = preprocess.preprocess_image(raw.array, raw.max_value, pp, source)
        if mask is not None:
            msource = str(it.mask) if ds.format not in VOLUME_FORMATS else f"{it.mask} slice {it.ref}"
            if ds.format == "npz":
                msource = f"{it.image}[{it.ref[0]}_masks][{it.ref[1]}]"
            _finite(mask, msource, "mask")
            if mask.shape[:2] != raw.array.shape[:2]:
                raise DataError(f"{msource}: mask size {mask.shape[:2]} does not match its image {source} "
                                f"{raw.array.shape[:2]}")
            raw_mask = mask
            mask = preprocess.mask_to_classes(mask, ds.mask_mode, ds.mask_threshold, msource)
            _mask_stats(raw_mask, mask, it, msource, ds, stats)
            mask = preprocess.resize_mask(mask, pp.image_size)
        out[it.id] = (image, mask, raw.max_value, source)
    return out


def _image_stats(raw: io.Raw, source: str, pp: DataConfig, stats: dict) -> None:
    a = raw.array
    h, w = a.shape[:2]
    stats["decoded"] += 1
    stats["image_modes"][raw.mode or str(a.dtype)] += 1
    stats["image_sizes"][(h, w)] += 1
    stats["image_channels"][1 if a.ndim == 2 else a.shape[-1]] += 1
    for note in raw.notes:
        stats["notes"][note] += 1
    if pp.image_size is not None and (h, w) != (pp.image_size, pp.image_size):
        stats["resized"] += 1
        if min(h, w) < pp.image_size:
            stats["upsampled"].append((min(h, w), source))
    top = a.max()
    if top > 0 and np.all((a == 0) | (a == top)) and np.any(a == 0):  # exactly two values, 0 and one other
        stats["binary_images"].append(source)


def _mask_stats(raw: np.ndarray, classes: np.ndarray, it: Item, source: str, ds: DatasetConfig, stats: dict) -> None:
    values, counts = np.unique(raw, return_counts=True)
    if len(values) <= 4096:
        stats["mask_values"].update({v.item(): int(c) for v, c in zip(values, counts)})
    stats["n_masks"] += 1
    stats["mask_suffixes"][io.full_suffix(it.mask) if ds.format != "npz" else "npz"] += 1
    stats["mask_channels"][1 if raw.ndim == 2 else raw.shape[-1]] += 1
    top = raw.max().item()
    if stats["mask_raw_max"] is None or top > stats["mask_raw_max"][0]:
        stats["mask_raw_max"] = (top, sorted(v.item() for v in values[:16]), source)
    if ds.mask_mode == "binary":
        nonzero = values[values != 0]
        if raw.ndim == 3 and not all(np.array_equal(raw[..., 0], raw[..., c]) for c in range(1, raw.shape[-1])):
            stats["nonbinary_masks"].append(f"{source} (colour channels differ)")
        elif len(nonzero) > 1:
            stats["nonbinary_masks"].append(f"{source} ({len(values)} values, {values.min().item()}..{top})")
        if classes.any():
            stats["mask_foreground"] += 1
        elif top > 0:
            stats["masks_emptied"].append(f"{source} (values up to {top})")


def _check_binary_masks(ds: DatasetConfig, stats: dict) -> None:
    """Masks stored as class values (0/1, 0/1/2) with the 8-bit threshold 127 would all become background, and the
    run would 'complete' on empty masks. Refuse, and say which threshold (or mask_mode) fits."""
    if ds.mask_mode != "binary" or stats["n_masks"] == 0 or stats["mask_foreground"] > 0:
        return
    top, values, source = stats["mask_raw_max"]
    if top <= 0:
        return  # truly empty masks everywhere: dataset-check warns, nothing was lost by thresholding
    raise DataError(f"{source}: every loaded mask is all background after dataset.mask_threshold={ds.mask_threshold}"
                    f" (mask_mode=binary: pixel > threshold = foreground), but the masks hold values up to {top} "
                    f"(this one: {values}): they look like class values. Set dataset.mask_threshold=0 (every "
                    "non-zero value = foreground)" + (" or dataset.mask_mode=index (values are classes)"
                                                      if len(values) > 2 else ""))


def _conversions(ds: DatasetConfig, pp: DataConfig, stats: dict, n_volumes: int | None, n_slices: int) -> list[str]:
    """In words, what was done to the stored pixels (recorded as meta["conversions"] and in every run record)."""
    out = []
    if n_volumes is not None:
        out.append(f"volumes: {n_volumes} {ds.format} volumes sliced along voxel axis {ds.slice_axis} into "
                   f"{n_slices} 2D slices ({ds.volume_slices})")
    for note, n in sorted(stats["notes"].items()):
        out.append(f"images: {note} ({n} images)")
    channels = stats["image_channels"]
    if pp.color == "grayscale" and channels.get(3):
        out.append(f"images: 3-channel RGB -> grayscale (ITU-R 601 luma) ({channels[3]} images)")
    if pp.color == "rgb" and channels.get(1):
        out.append(f"images: 1-channel -> RGB (channel repeated) ({channels[1]} images)")
    if stats["resized"]:
        sizes = ", ".join(f"{w}x{h}" for (h, w) in sorted(stats["image_sizes"])[:4])
        more = f" (+{len(stats['image_sizes']) - 4} more sizes)" if len(stats["image_sizes"]) > 4 else ""
        out.append(f"images: {stats['resized']} resized from {sizes}{more} (WxH) to {pp.image_size}x{pp.image_size} "
                   f"({pp.resize_method}; aspect ratio not kept); masks resized nearest")
    if stats["upsampled"]:
        side, src = min(stats["upsampled"])
        out.append(f"images: {len(stats['upsampled'])} upsampled (smaller than {pp.image_size} px; smallest side "
                   f"{side} px: {src})")
    if stats["n_masks"]:
        kinds = ", ".join(f"{n} {'lossy JPEG' if s in ('.jpg', '.jpeg') else s.lstrip('.').upper()}"
                          for s, n in sorted(stats["mask_suffixes"].items()))
        chans = "/".join(f"{c}" for c in sorted(stats["mask_channels"]))
        if ds.mask_mode == "binary":
            out.append(f"masks: {kinds} ({chans}-channel) -> binary at {ds.mask_threshold} (pixel > "
                       f"{ds.mask_threshold} in any channel = 1)"
                       + (f"; {len(stats['nonbinary_masks'])} masks were not binary" if stats["nonbinary_masks"]
                          else ""))
        else:
            out.append(f"masks: {kinds} ({chans}-channel), values used as class indices")
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


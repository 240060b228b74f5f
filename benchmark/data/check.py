"""``medsynbench dataset-check``: load a dataset config as ``train`` would, without training, and say what was found.

:func:`check_dataset` runs the real loader (:func:`benchmark.data.load_dataset`, so every load-time error is the one
``train`` would raise) with a ``report`` dict the loader fills in, then adds warnings from heuristics on what it found:
mask-like files among the images, masks that are not binary or are lossy JPEG, a random split on data that has a
patient/group column or looks like video frames, class imbalance, a classification dataset without labels.
Errors make the check fail (non-zero exit); warnings do not.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from medsynbench.benchmark.data.config import SPLITS
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.io import printable
from medsynbench.benchmark.data.sources import _few, looks_like_mask_name

# CSV columns that usually hold a patient / subject / sequence: a random split must keep them together
GROUP_COLUMN_RX = re.compile(r"(?i)patient|subject|participant|person|case|study|series|sequence|video|group|"
                             r"session|scan|volume|eye")
FRAME_RX = re.compile(r"^(.*\D)(\d+)$")  # "video3/frame_0012" -> ("video3/frame_", "0012")


def check_dataset(dataset_cfg, data_cfg=None, imbalance_ratio: float = 4.0) -> dict:
    """Load the dataset and return a JSON-able report: summary, conversions, warnings and errors."""
    from medsynbench.benchmark.data.loader import load_dataset

    found: dict = {}
    errors: list[str] = []
    bundle = None
    try:
        bundle = load_dataset(dataset_cfg, data_cfg, report=found)
    except DataError as err:
        errors.append(str(err))
    ds, pp = found.get("dataset"), found.get("data")
    report: dict = {"dataset": getattr(ds, "name", None), "ok": not errors, "errors": errors, "warnings": []}
    if ds is None:
        return report
    report.update(format=ds.format, task=ds.task, root=str(found.get("root", ds.root)), split_source=ds.split)
    warn = report["warnings"].append
    items = found.get("items", [])
    if items:
        report["images_found"] = len(items)
        for w in _mask_like_images(items, ds):
            warn(w)
        for w in _grouping(items, ds, found.get("root")):
            warn(w)
    stats = found.get("decode")
    if stats:
        report["image_modes"] = dict(stats["image_modes"])
        report["image_sizes"] = {f"{w}x{h}": n for (h, w), n in sorted(stats["image_sizes"].items())}
        report["image_channels"] = {str(c): n for c, n in sorted(stats["image_channels"].items())}
        if stats["binary_images"]:
            warn(f"{len(stats['binary_images'])} images hold only two values (0 and one other), as masks do: "
                 f"{_few(stats['binary_images'])}; are masks mixed in with the images?")
        if stats["n_masks"]:
            report["masks"] = _mask_summary(stats)
            for w in _mask_warnings(stats, ds):
                warn(w)
        elif ds.task == "segmentation" and ds.masks_dir is None and ds.format != "npz":
            warn("dataset.task=segmentation but no masks are configured (dataset.masks_dir is null): the "
                 "segmentation downstream task needs masks; set masks_dir, or task=classification|generation")
        if stats["upsampled"] and pp is not None:
            side, src = min(stats["upsampled"])
            if side * 2 <= pp.image_size:
                warn(f"{len(stats['upsampled'])} images are upsampled more than 2x to data.image_size="
                     f"{pp.image_size} (smallest side {side} px: {src}); lower data.image_size?")
    if bundle is not None:
        meta = bundle.meta
        report["splits"] = {s: {"in_split": meta["split_sizes"][s], "loaded": meta["counts"][s]} for s in SPLITS}
        report["class_names"] = list(bundle.class_names)
        report["class_counts"] = meta["class_counts"]
        report["content_sha256"] = {s: meta[f"{s}_content_sha256"] for s in SPLITS if f"{s}_content_sha256" in meta}
        report["conversions"] = meta["conversions"]
        report["excluded"] = meta["excluded"]
        for w in _labels(bundle, ds, imbalance_ratio):
            warn(w)
    return report


def _mask_like_images(items, ds) -> list[str]:
    """Files named like masks among the images (with masks_dir set the loader already left the claimed ones out)."""
    hits = [printable(it.image) for it in items if it.image.suffix.lower() != ".npz" and looks_like_mask_name(it.image)]
    if not hits:
        return []
    return [f"{len(hits)} of the {len(items)} image files are named like masks (*_mask*, *_seg*, *_gt*, *_1stHO* "
            f"...): {_few(hits)}; they would be trained on as images. Leave them out with "
            f"dataset.image_exclude (e.g. ['*_mask*']) or pair them as masks (masks_dir + mask_pattern)"]


def _grouping(items, ds, root) -> list[str]:
    """A random split on data with a patient/sequence structure leaks near-duplicates into the test split."""
    if ds.split != "random" or ds.group_column or ds.group_pattern or ds.format in ("nifti", "metaimage"):
        return []
    out = []
    if ds.index_csv and root is not None:
        try:
            import pandas as pd

            columns = list(pd.read_csv(Path(root) / ds.index_csv, nrows=0).columns)
        except Exception:  # the loader reports an unreadable CSV
            columns = []
        likely = [c for c in columns if GROUP_COLUMN_RX.search(str(c)) and c != ds.id_column]
        if likely:
            out.append(f"{Path(root) / ds.index_csv}: column {likely[0]!r} looks like a patient/group column but "
                       f"the split is random over images: images of one {likely[0]} can land in both train and "
                       f"test; set dataset.group_column={likely[0]}")
    sequences: dict[str, list[int]] = {}
    for it in items:
        m = FRAME_RX.match(it.id)
        if m:
            sequences.setdefault(m.group(1), []).append(int(m.group(2)))
    runs = {p: sorted(n) for p, n in sequences.items() if len(n) >= 3 and max(n) - min(n) + 1 <= 2 * len(n)}
    if len(runs) >= 2 and sum(len(n) for n in runs.values()) >= len(items) / 2:
        examples = [f"{p}{{{min(n)}..{max(n)}}}" for p, n in sorted(runs.items())]
        out.append(f"{len(runs)} sequences of running frame numbers ({_few(examples, 3)}): looks like video frames "
                   "or slices, whose neighbours are near-duplicates; a random split puts neighbours in train and "
                   "test. Group them: dataset.group_pattern='^(.*\\D)\\d+$' (or a group_column in an index CSV)")
    return out


def _mask_summary(stats: dict) -> dict:
    values: Counter = stats["mask_values"]
    total = sum(values.values()) or 1
    top = values.most_common(8)
    return {"files": stats["n_masks"], "formats": dict(stats["mask_suffixes"]),
            "channels": {str(c): n for c, n in sorted(stats["mask_channels"].items())},
            "distinct_values": len(values),
            "values": {str(v): round(n / total, 4) for v, n in sorted(top, key=lambda t: t[0])},
            "masks_with_foreground": stats["mask_foreground"]}


def _mask_warnings(stats: dict, ds) -> list[str]:
    out = []
    jpeg = sum(n for s, n in stats["mask_suffixes"].items() if s in (".jpg", ".jpeg"))
    if ds.mask_mode == "binary":
        thr = f"binarised at dataset.mask_threshold={ds.mask_threshold} (pixel > {ds.mask_threshold} = foreground)"
        if jpeg:
            out.append(f"{jpeg} masks are lossy JPEG (edges hold intermediate values); {thr}")
        if stats["nonbinary_masks"]:
            out.append(f"{len(stats['nonbinary_masks'])} masks are not binary: {_few(stats['nonbinary_masks'], 3)}; "
                       f"{thr}")
        if stats["masks_emptied"] and stats["mask_foreground"]:
            out.append(f"{len(stats['masks_emptied'])} masks have non-zero values only at or below the threshold and "
                       f"become all background: {_few(stats['masks_emptied'], 3)}")
        if not stats["mask_foreground"]:
            out.append("every loaded mask is all background (no foreground pixel in any mask)")
    return out


def _labels(bundle, ds, ratio: float) -> list[str]:
    out = []
    if not bundle.class_names:
        if ds.task == "classification":
            out.append("dataset.task=classification but the dataset has no labels: the classification downstream "
                       "task cannot run. Set dataset.labels_from=folder (class sub-folders), or index_csv + "
                       "label_column")
        return out
    for split, counts in bundle.meta["class_counts"].items():
        if not counts or not sum(counts.values()):
            continue
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            out.append(f"class imbalance: the {split} split has no images of class {empty} ({counts})")
            continue
        big, small = max(counts.values()), min(counts.values())
        if big >= ratio * small:
            out.append(f"class imbalance: the {split} split has {counts} ({big / small:.1f}:1, warning at "
                       f"{ratio:g}:1); accuracy alone will mislead (look at balanced accuracy and AUC)")
    return out


def format_report(report: dict) -> str:
    """Human-readable form of :func:`check_dataset`'s report."""
    lines = [f"dataset-check: {report.get('dataset')} ({report.get('format')}, task={report.get('task')}) at "
             f"{report.get('root')}"]
    if "images_found" in report:
        lines.append(f"  images found: {report['images_found']}")
    if "splits" in report:
        lines.append(f"  splits ({report['split_source']}): " + ", ".join(
            f"{s} {v['loaded']}" + (f"/{v['in_split']}" if v["loaded"] != v["in_split"] else "")
            for s, v in report["splits"].items()))
        ex = report.get("excluded", {})
        if any(ex.values()):
            lines.append(f"  left out: {ex}")
    if report.get("class_names"):
        lines.append("  classes: " + "; ".join(
            f"{c}: " + ", ".join(f"{s} {report['class_counts'][s].get(c, 0)}" for s in SPLITS
                                 if report["class_counts"].get(s))
            for c in report["class_names"]))
    if "image_sizes" in report:
        lines.append("  image sizes (WxH): " + ", ".join(f"{k} x{n}" for k, n in list(report["image_sizes"].items())[:6])
                     + (" ..." if len(report["image_sizes"]) > 6 else ""))
        lines.append("  image modes: " + ", ".join(f"{k} x{n}" for k, n in report["image_modes"].items()))
    if "masks" in report:
        m = report["masks"]
        lines.append(f"  masks: {m['files']} files {m['formats']}, {m['distinct_values']} distinct values; most "
                     f"frequent (pixel fraction): {m['values']}; {m['masks_with_foreground']} with foreground")
    for split, digest in report.get("content_sha256", {}).items():
        lines.append(f"  {split} content sha256: {digest}")
    if report.get("conversions"):
        lines.append("  conversions:")
        lines += [f"    - {c}" for c in report["conversions"]]
    if report["warnings"]:
        lines.append(f"warnings ({len(report['warnings'])}):")
        lines += [f"  - {w}" for w in report["warnings"]]
    if report["errors"]:
        lines.append(f"errors ({len(report['errors'])}):")
        lines += [f"  - {e}" for e in report["errors"]]
    lines.append("FAILED: the loader refuses this dataset" if report["errors"] else
                 f"OK ({len(report['warnings'])} warnings)")
    return "\n".join(lines)

"""Build data/isic2018_mini: the small ISIC 2018 subset shipped in the repo (default dataset, quickstart, tests).

Picks 160 images of the source train split and 80 of its test split, stratified by ISIC 2017 diagnosis with the
same seeded nested ordering the loader uses for training subsets (benchmark.data.splits.nested_order), so the pick is
deterministic. Only images with a diagnosis label are eligible. Images are resized 256 -> 64 with Pillow's Lanczos
filter and stored as PNG (lossless); masks are area-averaged to 64x64 and thresholded at 127 (a per-pixel majority
vote), stored as PNG with values {0, 255}.

Usage: python scripts/build_embedded_data.py [--source ../shared/data/isic2018-task1-256] [--out data/isic2018_mini]
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from medsynbench.benchmark.data.splits import nested_order

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["melanoma", "nevus", "seborrheic_keratosis"]
SIZE = 64
SEED = 0
N_TRAIN, N_TEST = 160, 80

SOURCE_MD = """# isic2018_mini — 240 ISIC 2018 Task 1 dermoscopy images at 64x64 with lesion masks and diagnosis labels

Embedded default dataset of medsynbench (quickstart and tests run without external data).

- Original datasets: ISIC 2018 Challenge Task 1 lesion segmentation — Codella N. et al., "Skin Lesion Analysis
  Toward Melanoma Detection 2018: A Challenge Hosted by the International Skin Imaging Collaboration (ISIC)",
  arXiv:1902.03368 (2019); Tschandl P. et al., "The HAM10000 dataset", Scientific Data 5:180161 (2018).
  Diagnosis labels: ISIC 2017 Challenge Part 3 — Codella N. et al., "Skin lesion analysis toward melanoma
  detection: A challenge at the 2017 ISBI, hosted by ISIC", IEEE ISBI 2018.
- Licence: CC BY-NC 4.0 (attribution, non-commercial), as for the ISIC 2018 challenge data.
- Built from the staged copy `isic2018-task1-256` (256x256 JPEG images and PNG masks resized by a third party from
  the originals, aspect ratio not kept; its own train/val/test split; see that folder's SOURCE.md) by
  `scripts/build_embedded_data.py` (seed {seed}).
- Selection: {n_train} images of the source train split and {n_test} of its test split, among images that have an
  ISIC 2017 diagnosis, stratified by diagnosis with a seeded ordering (deterministic).
  train: {train_counts}; test: {test_counts}.
- Conversion: images resized 256x256 -> {size}x{size} with Pillow Lanczos, saved as RGB PNG (lossless);
  masks area-averaged to {size}x{size} and thresholded at 127 (majority vote), saved as PNG with values {{0, 255}}.
- Files: `images/<id>.png`, `masks/<id>_segmentation.png`, `labels.csv` (image_id, diagnosis, benign_malignant,
  split, source_split), `split_train.txt`, `split_test.txt`.
"""


def _read_ids(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _pick(ids: list[str], diagnosis: dict[str, str], n: int) -> list[str]:
    pool = sorted(i for i in ids if diagnosis.get(i) in CLASSES)
    order = nested_order(pool, [CLASSES.index(diagnosis[i]) for i in pool], SEED)
    return sorted(pool[k] for k in order[:n])


def build(source: Path, out: Path) -> None:
    rows = {r["image_id"]: r for r in csv.DictReader((source / "index.csv").open())}
    diagnosis = {i: r["diagnosis_isic2017"] for i, r in rows.items()}
    picks = {"train": _pick(_read_ids(source / "split_train.txt"), diagnosis, N_TRAIN),
             "test": _pick(_read_ids(source / "split_test.txt"), diagnosis, N_TEST)}
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "diagnosis", "benign_malignant", "split", "source_split"])
        for split, ids in picks.items():
            for i in ids:
                r = rows[i]
                with Image.open(source / r["image"]) as im:
                    im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(
                        out / "images" / f"{i}.png", optimize=True)
                with Image.open(source / r["mask"]) as m:
                    area = np.asarray(m.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX))
                Image.fromarray(np.where(area > 127, 255, 0).astype(np.uint8)).save(
                    out / "masks" / f"{i}_segmentation.png", optimize=True)
                w.writerow([i, r["diagnosis_isic2017"], r["benign_malignant"], split, r["repo_split"]])
        for split, ids in picks.items():
            (out / f"split_{split}.txt").write_text("\n".join(ids) + "\n")

    def counts(ids):
        return ", ".join(f"{c} {sum(diagnosis[i] == c for i in ids)}" for c in CLASSES)

    (out / "SOURCE.md").write_text(SOURCE_MD.format(seed=SEED, n_train=N_TRAIN, n_test=N_TEST, size=SIZE,
                                                    train_counts=counts(picks["train"]),
                                                    test_counts=counts(picks["test"])))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(picks['train'])} train + {len(picks['test'])} test, {total / 2**20:.2f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "isic2018-task1-256")
    ap.add_argument("--out", type=Path, default=REPO / "data" / "isic2018_mini")
    args = ap.parse_args()
    build(args.source, args.out)


if __name__ == "__main__":
    main()

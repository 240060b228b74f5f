"""``medsynbench turing create``: a study directory from runs, a model package or folders of images.

A study is ``<study_dir>/`` with ``study.sqlite`` (ground truth, raters, answers; see :mod:`.db`), ``study.json``
(its settings, no ground truth) and ``images/<opaque id>.png``. Selection is seeded: ``n_images`` images,
``real_fraction`` of them real, drawn without replacement from the real and synthetic pools (optionally with equal
counts per class on both sides, or per model on the synthetic side), then shuffled. Every image, real or synthetic,
goes through :mod:`.encode` (same mode, size, filter, uncompressed metadata-free PNG) and gets a random id.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.turing import db
from medsynbench.benchmark.turing.encode import (IMAGE_SUFFIXES, RESAMPLE, encode_png, file_to_uint8, is_color,
                                                 standardise, tensor_to_uint8)
from medsynbench.benchmark.validate import ConfigError
from medsynbench.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger("medsynbench")


@dataclass
class Candidate:
    """One image that may enter a study: 8-bit pixels, ground truth, the model (or ``real``) it came from, its class
    name (or None) and where it came from (kept in the database, never served)."""

    pixels: np.ndarray
    truth: str
    source: str
    label: str | None
    origin: str


# --- selection -------------------------------------------------------------------------------------------------------
def _split_evenly(total: int, keys: list, rng: np.random.Generator) -> dict:
    base, extra = divmod(total, len(keys))
    lucky = set(rng.permutation(len(keys))[:extra].tolist())
    return {k: base + (i in lucky) for i, k in enumerate(keys)}


def _draw(pool: list[Candidate], n: int, rng: np.random.Generator, what: str) -> list[Candidate]:
    if n > len(pool):
        raise ConfigError(f"the study needs {n} {what} but only {len(pool)} are available; lower n_images, change "
                          "real_fraction or give more images")
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False).tolist())]


def select(real: list[Candidate], synthetic: list[Candidate], n_images: int, real_fraction: float,
           stratify: str | None, seed: int) -> list[Candidate]:
    """``n_images`` candidates, round(n_images x real_fraction) real, the rest synthetic, shuffled; seeded.

    ``stratify=class``: each side's count split evenly over the classes (every candidate needs a class);
    ``stratify=model``: the synthetic count split evenly over the synthetic sources."""
    if n_images < 2:
        raise ConfigError(f"n_images must be at least 2, got {n_images}")
    if not 0.0 <= real_fraction <= 1.0:
        raise ConfigError(f"real_fraction must be in [0, 1], got {real_fraction}")
    if stratify not in (None, "class", "model"):
        raise ConfigError(f"stratify must be null, class or model, got {stratify!r}")
    rng = np.random.default_rng(seed)
    n_real = int(round(n_images * real_fraction))
    n_synthetic = n_images - n_real
    chosen: list[Candidate] = []
    if stratify == "class":
        for side, pool in (("real", real), ("synthetic", synthetic)):
            unlabelled = sum(c.label is None for c in pool)
            if unlabelled:
                raise ConfigError(f"stratify=class needs a class for every image, but {unlabelled} {side} images have "
                                  "none (an unconditional GAN, a dataset or folder without labels); use stratify=null"
                                  " or stratify=model")
        classes = sorted({c.label for c in real} | {c.label for c in synthetic})
        for side, pool, n in (("real", real, n_real), ("synthetic", synthetic, n_synthetic)):
            for cls, k in _split_evenly(n, classes, rng).items():
                chosen += _draw([c for c in pool if c.label == cls], k, rng, f"{side} images of class {cls!r}")
    else:
        chosen += _draw(real, n_real, rng, "real images")
        if stratify == "model":
            sources = sorted({c.source for c in synthetic})
            for src, k in _split_evenly(n_synthetic, sources, rng).items():
                chosen += _draw([c for c in synthetic if c.source == src], k, rng, f"synthetic images of {src}")
        else:
            chosen += _draw(synthetic, n_synthetic, rng, "synthetic images")
    return [chosen[i] for i in rng.permutation(len(chosen))]


# --- sources ---------------------------------------------------------------------------------------------------------
def folder_candidates(folder: str | Path, truth: str, source: str) -> list[Candidate]:
    """Every image under ``folder`` (recursively); an image in a sub-folder gets the sub-folder's name as class."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{truth} folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{truth} folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for path in files:
        try:
            pixels = file_to_uint8(path)
        except Exception as err:  # noqa: BLE001 - a user's file: name it
            raise ConfigError(f"cannot read image {path}: {err}") from err
        rel = path.relative_to(root)
        out.append(Candidate(pixels, truth, source, rel.parts[0] if len(rel.parts) > 1 else None, f"{root}/{rel}"))
    return out


def _store_run_dirs(store_dir: Path, runs_dir: Path, wanted: list[str], where: dict) -> list[Path]:
    """Run directories of training ids (or of every completed store record matching ``where``)."""
    from medsynbench.benchmark.store import load_records

    records = load_records(store_dir) if (Path(store_dir) / "records").is_dir() else []
    by_tid = {r.get("training_id"): r for r in records}
    out = []
    for tid in wanted:
        rec = by_tid.get(tid)
        path = Path(rec["run_dir"]) if rec and rec.get("run_dir") else Path(runs_dir) / tid
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"runs: {tid!r} is neither a run directory nor a training id of the results store "
                              f"{store_dir} (nor a folder of {runs_dir})")
        out.append(path)
    if where:
        flat = _flatten(where)
        for rec in records:
            if rec.get("status") != "completed" or not rec.get("run_dir"):
                continue
            cfg = rec.get("config") or {}
            if all(_norm(cfg.get(k, rec.get(k))) in {_norm(v) for v in (w if isinstance(w, list) else [w])}
                   for k, w in flat.items()):
                out.append(Path(rec["run_dir"]))
        if not out:
            raise ConfigError(f"filter {flat} matches no completed run of the results store {store_dir}")
    return list({p.resolve(): p for p in out}.values())


def _flatten(where: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in where.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: list(v) if isinstance(v, (list, tuple)) else v})
    return out


def _norm(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _class_name(names: list[str], label) -> str | None:
    if label is None:
        return None
    i = int(label)
    return names[i] if i < len(names) else str(i)


def generator_candidates(gan, n: int, seed: int, source: str, class_names: list[str], train_masks, batch_size: int,
                         balanced_classes: bool) -> list[Candidate]:
    """``n`` samples of a GAN (its image channels only). A class-conditional GAN gets labels cycling over the classes
    when ``balanced_classes`` (stratify=class), else uniform random ones; a mask-conditioned GAN real training masks."""
    from medsynbench.gans.base import draw_train_masks

    labels = None
    if getattr(gan, "num_classes", 0):
        k = gan.num_classes
        labels = (torch.arange(n) % k) if balanced_classes else torch.randint(k, (n,), generator=torch.Generator()
                                                                              .manual_seed(seed))
    masks = draw_train_masks(train_masks, n, seed) if getattr(gan, "takes_masks", False) else None
    gan.eval()
    out = gan.sample(n, seed=seed, labels=labels, masks=masks, batch_size=batch_size)
    got = out.get("labels")
    return [Candidate(tensor_to_uint8(img), "synthetic", source,
                      _class_name(class_names, None if got is None else got[i]), f"{source} sample {i} (seed {seed})")
            for i, img in enumerate(out["images"])]


def run_sources(cfg, device, n_synthetic: int) -> tuple[list[Candidate], list[Candidate], list[dict]]:
    """(real, synthetic, source descriptions) from the runs named by ``runs`` / ``filter``."""
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.reevaluate import load_run

    given = [str(r) for r in cfg.runs]
    where = OmegaConf.to_container(cfg.filter, resolve=True) if cfg.filter else {}
    run_dirs = [Path(r) for r in given if Path(r).is_dir()] + _store_run_dirs(
        Path(cfg.paths.store_dir), Path(cfg.paths.runs_dir), [r for r in given if not Path(r).is_dir()], where)
    run_dirs = list({p.resolve(): p for p in run_dirs}.values())
    real: list[Candidate] = []
    synthetic: list[Candidate] = []
    sources, dataset_key = [], None
    for i, run_dir in enumerate(run_dirs):
        run_cfg, gan, ckpt = load_run(run_dir, device)
        key = (run_cfg.dataset.name, run_cfg.data.image_size)
        if dataset_key is not None and key != dataset_key:
            raise ConfigError(f"runs of one study must share their dataset and image size: {run_dir} has {key}, "
                              f"the first run {dataset_key}")
        bundle = load_dataset(run_cfg.dataset, run_cfg.data)
        name = run_dir.name
        synthetic += generator_candidates(gan, n_synthetic, int(cfg.seed) * 1000 + i, name, list(bundle.class_names or
                                          []), bundle.train.masks, int(cfg.batch_size), cfg.stratify == "class")
        sources.append({"kind": "run", "name": name, "path": str(run_dir), "checkpoint": str(ckpt),
                        "gan": str(run_cfg.gan.name), "dataset": str(run_cfg.dataset.name)})
        if dataset_key is None and cfg.real_folder is None:
            if cfg.real_split not in ("test", "train"):
                raise ConfigError(f"real_split must be test or train, got {cfg.real_split!r}")
            split = bundle.test if cfg.real_split == "test" else bundle.train
            names = list(bundle.class_names or [])
            labels = split.labels
            real = [Candidate(tensor_to_uint8(img), "real", "real",
                              _class_name(names, None if labels is None else labels[j]),
                              f"{run_cfg.dataset.name} {cfg.real_split} {split.ids[j] if split.ids else j}")
                    for j, img in enumerate(split.images)]
            sources.append({"kind": "dataset", "name": str(run_cfg.dataset.name), "split": cfg.real_split})
        dataset_key = key
    return real, synthetic, sources


def package_candidates(cfg, device, n_synthetic: int) -> tuple[list[Candidate], dict]:
    """Synthetic images of a model package (``medsynbench.benchmark.zoo.load_generator``)."""
    try:
        from medsynbench.benchmark.zoo import load_generator
    except ImportError as err:
        raise ConfigError(f"package={cfg.package}: model packages need medsynbench.benchmark.zoo.load_generator, "
                          f"which this installation does not have ({err}); use runs=, filter= or "
                          "synthetic_folder=") from None
    path = Path(str(cfg.package)).expanduser()
    if not path.exists():
        raise ConfigError(f"package={path}: no such file or folder")
    try:
        gan, meta = load_generator(path, device)  # the zoo's stable API: (gan, metadata), verified
    except Exception as err:  # noqa: BLE001 - a package that does not verify is the user's input: name it
        raise ConfigError(f"package={path}: {err}") from err
    names = list(((meta or {}).get("dataset") or {}).get("class_names") or [])
    if getattr(gan, "takes_masks", False):
        raise ConfigError(f"package={path}: a mask-conditioned generator needs real masks; sample it into a folder "
                          "and use synthetic_folder=")
    name = str((meta or {}).get("id") or path.name)
    return (generator_candidates(gan, n_synthetic, int(cfg.seed) * 1000 + 999, name, names, None,
                                 int(cfg.batch_size), cfg.stratify == "class"),
            {"kind": "package", "name": name, "path": str(path)})


# --- the study -------------------------------------------------------------------------------------------------------
def create_study(cfg) -> dict:
    """Build the study of ``cfg`` (a composed ``conf/turing.yaml``); returns a summary with the admin token and the
    rater tokens (shown once: only their hashes are stored)."""
    from medsynbench.benchmark.utils import resolve_device

    study_dir = Path(cfg.study_dir)
    if cfg.resample not in RESAMPLE:
        raise ConfigError(f"resample must be one of {sorted(RESAMPLE)}, got {cfg.resample!r}")
    if cfg.confidence_levels < 2 or cfg.confidence_levels > 10:
        raise ConfigError(f"confidence_levels must be 2..10, got {cfg.confidence_levels}")
    if cfg.image_size is not None and not 8 <= int(cfg.image_size) <= 4096:
        raise ConfigError(f"image_size must be 8..4096 px, got {cfg.image_size}")
    if not (cfg.runs or cfg.filter or cfg.package or cfg.synthetic_folder):
        raise ConfigError("no synthetic images: give runs=[<run dir or training id>,...], filter.<key>=<value> "
                          "(runs of the results store), package=<model package> or synthetic_folder=<dir>")
    if (study_dir / db.DB_NAME).exists() and not cfg.overwrite:
        raise ConfigError(f"study_dir {study_dir} already holds a study; choose another study_dir or pass "
                          "overwrite=true (its answers are lost)")
    n_real = int(round(cfg.n_images * cfg.real_fraction))
    n_synthetic = cfg.n_images - n_real
    device = resolve_device(cfg.device)
    real: list[Candidate] = []
    synthetic: list[Candidate] = []
    sources: list[dict] = []
    if cfg.runs or cfg.filter:
        real, synthetic, sources = run_sources(cfg, device, max(n_synthetic, 1))
    if cfg.package:
        found, desc = package_candidates(cfg, device, max(n_synthetic, 1))
        synthetic += found
        sources.append(desc)
    if cfg.synthetic_folder:
        folder = Path(str(cfg.synthetic_folder)).expanduser()
        synthetic += folder_candidates(folder, "synthetic", folder.name)
        sources.append({"kind": "folder", "truth": "synthetic", "name": folder.name, "path": str(folder)})
    if cfg.real_folder:
        folder = Path(str(cfg.real_folder)).expanduser()
        real = folder_candidates(folder, "real", "real")
        sources.append({"kind": "folder", "truth": "real", "name": folder.name, "path": str(folder)})
    if not real and n_real:
        raise ConfigError("no real images: give runs= (their dataset's real_split) or real_folder=<dir>")
    chosen = select(real, synthetic, int(cfg.n_images), float(cfg.real_fraction), cfg.stratify, int(cfg.seed))

    # one mode and one size for every image: colour if any chosen image is, the synthetic images' (commonest) size
    mode = "RGB" if any(is_color(c.pixels) for c in chosen) else "L"
    if cfg.image_size is not None:
        size = int(cfg.image_size)
    else:
        sizes = [max(c.pixels.shape[:2]) for c in chosen if c.truth == "synthetic"] or \
                [max(c.pixels.shape[:2]) for c in chosen]
        size = max(set(sizes), key=sizes.count)
    if study_dir.exists() and cfg.overwrite:
        for name in ("images", "results"):
            shutil.rmtree(study_dir / name, ignore_errors=True)
        for name in (db.DB_NAME, db.DB_NAME + "-wal", db.DB_NAME + "-shm", "study.json"):
            (study_dir / name).unlink(missing_ok=True)
    images_dir = study_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.time()
    rows, lengths = [], set()
    for position, cand in enumerate(chosen):
        image_id = secrets.token_hex(16)
        data = encode_png(standardise(cand.pixels, mode, size, cfg.resample))
        lengths.add(len(data))
        path = images_dir / f"{image_id}.png"
        atomic_write_bytes(path, data)
        rows.append({"id": image_id, "position": position, "truth": cand.truth, "source": cand.source,
                     "label": cand.label, "origin": cand.origin})
    for path in images_dir.iterdir():  # one timestamp for all: file times say nothing about the order of creation
        os.utime(path, (stamp, stamp))
    settings = {
        "title": str(cfg.title), "instructions": str(cfg.instructions), "n_images": len(chosen), "n_real": n_real,
        "n_synthetic": n_synthetic, "real_fraction": float(cfg.real_fraction), "stratify": cfg.stratify,
        "seed": int(cfg.seed), "image_size": size, "mode": mode, "resample": str(cfg.resample),
        "display_size": int(cfg.display_size), "show_score": bool(cfg.show_score),
        "require_confidence": bool(cfg.require_confidence), "confidence_levels": int(cfg.confidence_levels),
        "encoding": "PNG, uncompressed (zlib level 0), IHDR/IDAT/IEND only", "png_bytes": sorted(lengths),
        "sources": sources, "created_at": stamp,
    }
    admin = db.create_db(study_dir, settings, rows)
    atomic_write_json(study_dir / "study.json", settings)
    conn = db.connect(study_dir)
    try:
        raters = {name: db.add_rater(conn, name) for name in cfg.raters}
    finally:
        conn.close()
    return {"study_dir": str(study_dir), "settings": settings, "admin_token": admin, "rater_tokens": raters}


def link(base_url: str, kind: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/{kind}/{token}"


def write_links(path: str | Path, lines: list[str]) -> None:
    """Append links to a file readable by its owner only (tokens are secrets)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def describe(summary: dict) -> str:
    s = summary["settings"]
    return (f"study {summary['study_dir']}: {s['n_images']} images ({s['n_real']} real, {s['n_synthetic']} synthetic), "
            f"{s['image_size']} px {s['mode']}, stratify={s['stratify']}, seed={s['seed']}; sources: "
            + json.dumps([src['name'] for src in s['sources']]))

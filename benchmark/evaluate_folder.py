"""``medsynbench evaluate-folder``: score any folder of images (e.g. a medigan model's output, or another
framework's samples) against a dataset config, with the same metrics, extractors and records as a trained run."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medsynbench.benchmark.data.config import DataConfig
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.io import read_2d
from medsynbench.benchmark.data.preprocess import preprocess_image
from medsynbench.benchmark.data.types import ImageSet
from medsynbench.benchmark.store import flatten_config, write_record
from medsynbench.benchmark.utils import array_hash, git_commit, package_versions, resolve_device, stable_hash

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")


def load_image_folder(folder: str | Path, data_cfg, limit: int | None = None, progress: bool = True) -> ImageSet:
    """Every image in ``folder`` (sorted by name), preprocessed exactly like the real data (``data`` config)."""
    from omegaconf import OmegaConf

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    pp = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), data_cfg))
    arrays = []
    for path in tqdm(files, desc=f"read {folder.name}", disable=not progress):
        raw = read_2d(path)
        arrays.append(preprocess_image(raw.array, raw.max_value, pp, str(path)))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{folder}: images differ in shape after preprocessing {sorted(shapes)}; set data.image_size")
    return ImageSet(images=torch.from_numpy(np.stack(arrays)).float(), ids=[p.name for p in files])


def evaluate_folder(cfg) -> dict:
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.evaluate import EVALUATION_FIELDS, evaluate_synthetic
    from medsynbench.benchmark.run import job_threads

    threads = job_threads(cfg)  # num_threads, else the job's CPUs (SLURM, launcher, affinity), as for train
    if threads:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)
    device = resolve_device(cfg.device)
    synthetic = load_image_folder(cfg.folder, cfg.data, cfg.limit, progress=cfg.progress)  # a wrong folder fails first
    bundle = load_dataset(cfg.dataset, cfg.data)
    if synthetic.channels != bundle.channels:
        raise DataError(f"{cfg.folder}: images have {synthetic.channels} channels after preprocessing but "
                        f"{cfg.dataset.name} has {bundle.channels}; set data.color=grayscale or rgb for both")
    evaluation = evaluate_synthetic(cfg, synthetic, bundle, device)
    name = cfg.name or Path(cfg.folder).name
    flat = flatten_config(cfg)
    # the folder's content plays the role of the training: the same images scored the same way replace their record
    tid = f"folder-{name}-{array_hash(synthetic.images)[:10]}"
    eid = "e" + stable_hash({k: v for k, v in flat.items()
                             if not k.startswith(("paths.", "device", "folder", "name", "num_threads", "progress"))})
    record = {
        "run_id": tid, "training_id": tid, "evaluation_id": eid, "run_dir": str(cfg.folder),
        "experiment": "evaluate-folder", "seed": cfg.seed, "dataset": cfg.dataset.name, "gan": f"folder:{name}",
        "train_size": None, "status": "completed", "config": {**flat, "gan.name": f"folder:{name}"},
        "data": bundle.meta, "n_synthetic": len(synthetic), "versions": package_versions(), "git_commit": git_commit(),
        "device": str(device), "timings": evaluation["timings"],
        **{k: evaluation[k] for k in EVALUATION_FIELDS if k in evaluation},
    }
    write_record(cfg.paths.store_dir, record)
    return record

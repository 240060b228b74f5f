"""On-disk feature cache keyed by a content hash, so real features are extracted once per sweep.

The key is a JSON-able dict (dataset, split, file-list hash, preprocessing, extractor.describe()); its canonical
JSON is hashed with SHA-256. Files are written to a temporary name and ``os.replace``d, so parallel runs of a
multirun never read a half-written array.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.utils import atomic_write


def content_hash(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys; non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def array_hash(*arrays) -> str:
    """SHA-256 over the raw bytes, shapes and dtypes of arrays/tensors (None allowed)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class FeatureCache:
    def __init__(self, root_dir: str | os.PathLike):
        self.root = Path(root_dir)

    def path_for(self, key: dict) -> Path:
        return self.root / f"{content_hash(key)}.npy"

    def get_or_compute(self, key: dict, fn: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path_for(key)
        if path.is_file():
            try:
                return np.load(path)
            except (ValueError, OSError) as err:  # unreadable file: recompute rather than fail the run
                print(f"[metrics] feature cache {path} unreadable ({err}); recomputing")
        feats = np.asarray(fn())
        atomic_write(path, lambda fh: np.save(fh, feats))
        meta = json.dumps({"key": key, "shape": list(feats.shape), "dtype": str(feats.dtype)}, indent=1,
                          sort_keys=True, default=str).encode()
        atomic_write(path.with_suffix(".json"), lambda fh: fh.write(meta))
        return feats

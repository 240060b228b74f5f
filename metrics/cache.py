"""On-disk feature cache keyed by a content hash, so real features are extracted once per sweep.

The key is a JSON-able dict (dataset, split, the images' content hash, preprocessing, extractor.describe() and the
hash of the extractor's actual weights); its canonical JSON is hashed with SHA-256. Files are written to a temporary
name and ``os.replace``d, so parallel runs of a multirun never read a half-written array.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from medsynbench.io import (array_hash, atomic_write, content_hash, file_lock,  # noqa: F401  (re-exported)
                            remove_stale_temporaries)


class FeatureCache:
    def __init__(self, root_dir: str | os.PathLike):
        self.root = Path(root_dir)

    def path_for(self, key: dict) -> Path:
        return self.root / f"{content_hash(key)}.npy"

    def get_or_compute(self, key: dict, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """Cached features of ``key``, or ``fn()`` stored under it. Parallel runs asking for the same key wait for the
        one that computes it (file lock) instead of computing it side by side."""
        path = self.path_for(key)
        with file_lock(path):
            for name in (path.name, path.with_suffix(".json").name):  # left by a writer killed mid-way
                remove_stale_temporaries(path.parent, name)
            return self._get_or_compute(path, key, fn)

    def _get_or_compute(self, path: Path, key: dict, fn: Callable[[], np.ndarray]) -> np.ndarray:
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

"""Small runtime helpers of the orchestrator: device choice, seeding, RNG state (weights-only safe), provenance.

Atomic writes and hashes live in :mod:`medsynbench.io` (re-exported here for the orchestrator's modules)."""
from __future__ import annotations

import importlib.metadata
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from medsynbench.amp import Amp
from medsynbench.io import (array_hash, atomic_torch_save, atomic_write, atomic_write_bytes,  # noqa: F401
                            atomic_write_json, content_hash, sha256_file, stable_hash)

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch as is."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available; use device=auto or cpu")
    return dev


def autocast_context(device: torch.device, precision: str):
    """``32`` = full precision; ``bf16-mixed`` / ``16-mixed`` = torch.autocast with that dtype (forward passes only:
    training steps take a :class:`medsynbench.amp.Amp`, which also owns backward passes and the gradient scaler)."""
    return Amp(device.type, precision).autocast()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state as tensors and plain values, so a checkpoint holding it loads with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                        "gauss": gauss},
             "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state` (also takes the older format: Python's tuple and NumPy's legacy tuple)."""
    py = state["python"]
    if isinstance(py, dict):
        py = (py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"])
    random.setstate(py)
    npy = state["numpy"]
    if isinstance(npy, dict):
        npy = (npy["bit_generator"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
               npy["cached_gaussian"])
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit() -> str | None:
    """The repository's commit (``-dirty`` with uncommitted changes); None for an installed package, which must not
    report the commit of whatever repository its environment happens to sit in."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_PACKAGES = ("medsynbench", "torch", "torchvision", "hydra-core", "numpy", "scipy", "torchmetrics",
             "segmentation-models-pytorch", "timm", "scikit-image", "pandas")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions

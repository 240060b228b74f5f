"""Cache of the GAN-independent downstream scenarios (``real``, ``real_augmented``).

Their scores depend on the real data, the training-set size, the seed and the task settings, not on the GAN: in a sweep
of 10 GANs they are trained once per (data, size, seed, settings) and reused by the other 9 runs. The key holds the
SHA-256 of the real training and test tensors (images and targets: the content, not file names), the task settings
that shape the model and its training (not those of the synthetic scenarios, the progress bar or the maps), the
scenario, seed, class counts, the device type and the versions of torch / smp / timm. Entries are JSON files written
atomically under a file lock (parallel runs wait for the one computing a key), like the real-feature cache
(metrics/cache.py). A model's state dict is stored beside its entry when the caller asks for the model (maps).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from medsynbench.io import (array_hash, atomic_torch_save, atomic_write_json, content_hash, file_lock,
                            remove_stale_temporaries)

log = logging.getLogger(__name__)
# settings of the synthetic scenarios and of the output only: not part of a GAN-independent scenario's key
NOT_IN_KEY = ("progress", "synthetic_n", "mix_ratio", "mix_n", "train_on", "balance_ratio", "synthetic_chunk",
              "synthetic_ram_mb", "cache", "maps")
VERSION = 1


def _versions() -> dict:
    import importlib.metadata as md
    out = {"torch": torch.__version__}
    for pkg in ("segmentation-models-pytorch", "timm", "torchvision"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def data_digest(data, target_name: str) -> str:
    """SHA-256 of an image set's images and its targets (masks or labels)."""
    targets = getattr(data, target_name)
    return content_hash({"images": array_hash(data.images.float().numpy()),
                         "targets": None if targets is None else array_hash(targets.long().numpy())})


def scenario_key(settings, condition: str, real_digest: str, test_digest: str, n_real: int, n_out: int, seed: int,
                 device: str) -> dict:
    s = {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IN_KEY}
    if condition != "real_augmented":
        s.pop("augment", None)
    return {"version": VERSION, "condition": condition, "settings": s, "real_train": real_digest,
            "real_test": test_digest, "n_real_train": n_real, "n_outputs": n_out, "seed": seed,
            "device": torch.device(device).type, "versions": _versions()}


class ScenarioCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def paths(self, key: dict) -> tuple[Path, Path]:
        digest = content_hash(key)
        return self.root / f"{digest}.json", self.root / f"{digest}.pt"

    @contextmanager
    def locked(self, key: dict):
        path, _ = self.paths(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path):
            for name in (path.name, path.with_suffix(".pt").name):
                remove_stale_temporaries(path.parent, name)
            yield

    def get(self, key: dict, need_model: bool = False) -> tuple[list[dict], dict | None] | None:
        """(records, model state dict or None) of a stored entry; None when absent, unreadable, or the model is
        needed and was not stored."""
        path, model_path = self.paths(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("downstream cache %s unreadable (%s); recomputing", path, err)
            return None
        state = None
        if need_model:
            if not model_path.is_file():
                return None
            try:
                state = torch.load(model_path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - a truncated file: recompute
                log.warning("downstream cache %s unreadable (%s); recomputing", model_path, err)
                return None
        return entry["records"], state

    def put(self, key: dict, records: list[dict], model: torch.nn.Module | None = None) -> None:
        path, model_path = self.paths(key)
        if model is not None:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            atomic_torch_save(state, model_path)
        atomic_write_json(path, {"key": key, "records": records})

"""Where a downstream network's initial weights come from, and how that is recorded.

Three sources: random init (recorded as ``random-init``), ImageNet weights downloaded by the library (smp / timm, needs
internet once, then cached), or a local weights file (recorded as path + sha256). A missing source is an error that
says how to provide it; there is never a silent fallback to random weights, which would change what a number means.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from medsynbench.io import sha256_file  # noqa: F401  (re-exported: the task modules use it)

RANDOM_INIT = "random-init"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but cannot be obtained (offline, missing file, wrong file)."""


def state_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's parameters/buffers: identifies library-downloaded weights whose file we do not see."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_kind(spec) -> str:
    """null/false -> 'random'; true/'imagenet' -> 'imagenet'; anything else is a local file path -> 'file'."""
    if spec is None or spec is False or (isinstance(spec, str) and spec.lower() in ("", "none", "null", "false")):
        return "random"
    if spec is True or (isinstance(spec, str) and spec.lower() in ("imagenet", "true")):
        return "imagenet"
    return "file"


def require_file(spec, key: str) -> Path:
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"downstream.{key}: weights file {path} does not exist. Set downstream.{key} to an existing weights file, "
            f"to 'imagenet' (downloaded once when online, then cached), or to null for random init.")
    return path


def load_state_dict_file(path: Path) -> dict:
    """A plain state dict, or one nested under 'state_dict' / 'model' (common checkpoint layouts)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise WeightsUnavailableError(f"weights file {path} could not be read as a torch state dict: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsUnavailableError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def offline_error(what: str, key: str, err: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"{what} could not be obtained ({type(err).__name__}: {str(err)[:200]}). This machine may be offline. "
        f"Run once with internet access so the library caches them, or save them elsewhere and set "
        f"downstream.{key}=/path/to/weights.pth, or set downstream.{key}=null for random init (recorded as "
        f"'{RANDOM_INIT}').")

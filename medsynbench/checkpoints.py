"""Training checkpoints of a run directory: where they are, and loading them safely.

A run keeps its snapshots as ``<run dir>/checkpoints/step_<7 digits>.pt``. :func:`checkpoint_paths` is the one place
that lists them. Every load goes through :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (a pickle that
names any callable other than tensors and plain containers is refused before anything in it runs), then the content
is verified (required keys and types, the step matches the file name). Problems raise :class:`CheckpointError`,
which names the file and says what is wrong. :func:`latest_valid_checkpoint` walks back from the newest snapshot over
invalid ones (a truncated file from a kill, a corrupted disk block) with a warning naming each bad file.

A checkpoint holds only tensors and plain Python values (dicts, lists, tuples, str, int, float, bool, None):
``step``, ``model_args`` (with ``_target_``), ``state_dict``, and for resuming ``optimizers`` and ``rng``.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")
#: keys every checkpoint has, and those a training run also needs to resume
REQUIRED_KEYS = {"step": int, "model_args": dict, "state_dict": dict}
RESUME_KEYS = {"optimizers": dict, "rng": dict}


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"checkpoint {self.path}: {problem}")


class CheckpointWarning(UserWarning):
    """An invalid checkpoint was skipped (the message names the file)."""


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the snapshot of ``step`` lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{int(step):07d}.pt"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step a checkpoint file name stands for (``step_0000042.pt`` -> 42), or None for other names."""
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_paths(run_dir: str | os.PathLike) -> list[Path]:
    """Every ``checkpoints/step_*.pt`` of a run directory, oldest step first (hidden temporaries excluded)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := checkpoint_step(p)) is not None and p.is_file()]
    return [p for _, p in sorted(found)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _check_type(path: Path, ckpt: dict, key: str, kind: type) -> None:
    if key not in ckpt:
        raise CheckpointError(path, f"missing key {key!r} (has {sorted(ckpt)})")
    value = ckpt[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckpointError(path, f"{key!r} is a {type(value).__name__}, expected {kind.__name__}")


def verify_checkpoint(path: str | os.PathLike, ckpt, resume: bool = False) -> dict:
    """Raise :class:`CheckpointError` unless ``ckpt`` has the keys and types of a medsynbench checkpoint (and those
    needed to resume training when ``resume``) and its step matches the file name."""
    path = Path(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    for key, kind in {**REQUIRED_KEYS, **(RESUME_KEYS if resume else {})}.items():
        _check_type(path, ckpt, key, kind)
    target = ckpt["model_args"].get("_target_")
    if not isinstance(target, str) or not target:
        raise CheckpointError(path, f"model_args has no '_target_' string (got {target!r})")
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"state_dict entries that are not tensors: {bad[:5]}")
    named = checkpoint_step(path)
    if named is not None and named != ckpt["step"]:
        raise CheckpointError(path, f"holds step {ckpt['step']} but its name says step {named}")
    if resume and not isinstance(ckpt["rng"].get("torch"), torch.Tensor):
        raise CheckpointError(path, "rng has no 'torch' generator state")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location="cpu", resume: bool = False) -> dict:
    """Load and verify one checkpoint file with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the file when it is missing, empty, truncated or corrupt, when its pickle
    names anything but tensors and plain containers (refused without running it), or when its content is not a
    medsynbench checkpoint (see :func:`verify_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler refuses any global it does not allow (os.system, builtins.exec, ...)
        # before calling it: nothing of the file's code ran.
        raise CheckpointError(path, "refused to load: the file is not a weights-only checkpoint (its pickle "
                                    f"references code, an unsafe pickle) -- {_first_line(exc)}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, f"unreadable (truncated or corrupt file, {path.stat().st_size} bytes): "
                                    f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return verify_checkpoint(path, ckpt, resume=resume)


def latest_valid_checkpoint(run_dir: str | os.PathLike, map_location="cpu", resume: bool = False,
                            check: Callable[[Path, dict], None] | None = None,
                            skipped: list[str] | None = None) -> tuple[Path, dict] | None:
    """(path, checkpoint) of the newest checkpoint of ``run_dir`` that loads and verifies, or None when there is none.

    Invalid ones (and those for which ``check(path, ckpt)`` raises :class:`CheckpointError` or ``ValueError``) are
    skipped newest first, each with a :class:`CheckpointWarning` (and a log warning) that names the file and the
    problem (also appended to ``skipped`` when given)."""
    for path in reversed(checkpoint_paths(run_dir)):
        try:
            ckpt = load_checkpoint(path, map_location=map_location, resume=resume)
            if check is not None:
                check(path, ckpt)
            return path, ckpt
        except (CheckpointError, ValueError) as exc:
            msg = str(exc) if isinstance(exc, CheckpointError) else f"checkpoint {path}: {exc}"
            if skipped is not None:
                skipped.append(msg)
            msg = f"skipping invalid {msg}"
            log.warning("%s", msg)
            warnings.warn(msg, CheckpointWarning, stacklevel=2)
    return None

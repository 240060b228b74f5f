"""Atomic file writes, content hashes and a lock for artefacts that several processes share.

Every file that a run, a sweep or a cache writes goes through :func:`atomic_write`: readers never see half a file and
a writer killed mid-way leaves only a hidden ``.name.*.tmp`` behind (removed by :func:`remove_stale_temporaries`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch


_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only read it by setting it) and put it back
os.umask(_UMASK)


def atomic_write(path: Path, write) -> None:
    """``write(file_object)`` into a temporary file in the same folder, then ``os.replace``: readers never see half a
    file, and a writer killed mid-way leaves only a hidden ``.name.*.tmp`` behind. The file gets the permissions a
    plain ``open(path, "w")`` would give (0666 less the umask), not mkstemp's private 0600: results, packages and
    caches are shared with a team."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        crash_point(f"write:{path.name}")  # the file is complete but not yet in place
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file (weights provenance), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


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
        h.update(memoryview(a.reshape(-1)).cast("B"))  # the array's own buffer, no copy
    return h.hexdigest()


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the hidden ``.name.*.tmp`` files that a writer killed mid-way left in ``folder`` (not recursive): all of
    them, or only those of the file ``name``.

    Call it only where no other process can be writing the same files at the same time (a run directory whose run
    lock this process holds; a shared artefact whose file lock it holds)."""
    removed = []
    for tmp in Path(folder).glob(f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def crash_point(label: str) -> None:
    """Fault injection for the crash-consistency tests: when ``MEDSYNBENCH_CRASH_AT`` (a glob pattern) matches
    ``label``, the process kills itself with SIGKILL right here, as ``kill -9`` would. A no-op otherwise."""
    pattern = os.environ.get("MEDSYNBENCH_CRASH_AT")
    if pattern and fnmatch.fnmatchcase(label, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = -1):
    """An inter-process lock (``filelock``) on ``path`` + ``.lock``: one process builds a shared artefact (a trained
    extractor, cached features) while the others wait, then find it built."""
    from filelock import FileLock

    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        yield

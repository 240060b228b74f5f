"""Synthetic training sets for the downstream tasks: sampled in chunks (bounded memory), class-balancing plans, the
validation split and a lazy concatenation of real and synthetic images for the training loop.

- :func:`sample_chunked` calls a sampler chunk by chunk (``downstream.synthetic_chunk`` images per call). A set whose
  float32 images would exceed ``downstream.synthetic_ram_mb`` is written, chunk by chunk, to a float16 memory map in
  a temporary folder (masks as uint8) and read back batch by batch while training: the empirical study's 10,000
  synthetic pairs at 256 px (7.9 GB as float32) need one chunk of memory, not the whole set.
- :func:`balancing_plan`: synthetic images per class for ``train_on=real_balanced`` (dermatology study, Table 2):
  every class is filled up to ``balance_ratio`` x the majority class's count.
- :func:`validation_split`: a seeded split of the *real training* split (never the test split) into the images the
  models train on and the validation images early stopping watches; the same for every scenario.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from typing import Callable

import numpy as np
import torch

from medsynbench.types import ImageSet


class DiskArray:
    """A [N, ...] array in a ``.npy`` memory map, indexable like a tensor (rows come back as torch tensors of
    ``out_dtype``). The folder is removed when the last reference goes."""

    def __init__(self, shape: tuple, dtype, out_dtype: torch.dtype, folder: str | None = None):
        self._dir = tempfile.mkdtemp(prefix="msb-synthetic-", dir=folder)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.array = np.lib.format.open_memmap(f"{self._dir}/data.npy", mode="w+", dtype=dtype, shape=tuple(shape))
        self.out_dtype = out_dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.array.shape)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __len__(self) -> int:
        return self.array.shape[0]

    def __setitem__(self, index, value: torch.Tensor) -> None:
        self.array[index] = value.cpu().numpy().astype(self.array.dtype)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return torch.from_numpy(np.asarray(self.array[index])).to(self.out_dtype)

    def float(self) -> "DiskArray":  # the training code calls .float() on image sets
        return self

    def _reduce(self, fn) -> torch.Tensor:  # over row blocks: never the whole array in memory
        step = max(1, 2 ** 24 // max(1, int(np.prod(self.array.shape[1:]))))
        return torch.tensor(fn([fn(self.array[i:i + step]) for i in range(0, len(self), step)]))

    def min(self) -> torch.Tensor:
        return self._reduce(np.min)

    def max(self) -> torch.Tensor:
        return self._reduce(np.max)


def sample_chunked(sample: Callable[[int, int, int], ImageSet], n: int, chunk: int, ram_mb: float,
                   folder: str | None = None) -> tuple[ImageSet, dict]:
    """``n`` images from ``sample(start, stop, chunk_index) -> ImageSet`` called per chunk of at most ``chunk``;
    returns (the set, how it was made). A set that fits in one chunk is one call (``chunk_index`` 0)."""
    if n <= chunk:
        out = sample(0, n, 0)
        return out, {"n": n, "chunk": chunk, "n_chunks": 1, "storage": "memory"}
    first = sample(0, chunk, 0)
    per_image_mb = first.images[0].numel() * 4 / 2 ** 20
    on_disk = n * per_image_mb > ram_mb
    shape = (n, *first.images.shape[1:])
    if on_disk:
        images = DiskArray(shape, np.float16, torch.float32, folder)
        masks = None if first.masks is None else DiskArray((n, *first.masks.shape[1:]), np.uint8, torch.long, folder)
    else:
        images = torch.empty(shape, dtype=torch.float32)
        masks = None if first.masks is None else torch.empty((n, *first.masks.shape[1:]), dtype=torch.long)
    labels = None if first.labels is None else torch.empty(n, dtype=torch.long)
    n_chunks = math.ceil(n / chunk)
    for k in range(n_chunks):
        start, stop = k * chunk, min(n, (k + 1) * chunk)
        part = first if k == 0 else sample(start, stop, k)
        images[start:stop] = part.images.float()
        if masks is not None:
            masks[start:stop] = part.masks
        if labels is not None:
            labels[start:stop] = part.labels
        del part
    first = None  # noqa: F841  (the first chunk is released with the loop's reference)
    out = ImageSet(images=images, masks=masks, labels=labels, ids=[f"synthetic_{i:06d}" for i in range(n)])
    return out, {"n": n, "chunk": chunk, "n_chunks": n_chunks,
                 "storage": "disk (float16 memory map)" if on_disk else "memory"}


def balancing_plan(labels: torch.Tensor, num_classes: int, ratio: float = 1.0) -> dict[int, int]:
    """Synthetic images per class that lift every class to ``ceil(ratio * majority count)`` (0 for classes already
    there)."""
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).tolist()
    target = math.ceil(ratio * max(counts)) if counts else 0
    return {k: max(0, target - c) for k, c in enumerate(counts)}


def plan_labels(plan: dict[int, int]) -> torch.Tensor:
    """The label vector a class-conditional GAN is sampled with for a balancing plan (class by class)."""
    return torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in sorted(plan.items()) if n] or
                     [torch.empty(0, dtype=torch.long)])


def validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a real training split of ``n`` images; seeded, sorted."""
    if fraction <= 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    n_val = min(n - 2, max(2, int(round(fraction * n))))
    if n_val < 2:
        raise ValueError(f"downstream.val_fraction={fraction}: {n} real training images leave no validation split "
                         "(needs >= 2 validation and >= 2 training images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 29))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class ConcatImages:
    """Rows of several [N_i, ...] tensors / :class:`DiskArray` s, indexed as one (only the rows of a batch are read)."""

    def __init__(self, parts: list):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = torch.Size((int(self.offsets[-1]), *self.parts[0].shape[1:]))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.long)
        out = None
        for part, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:]):
            sel = (index >= int(lo)) & (index < int(hi))
            if not sel.any():
                continue
            rows = part[index[sel] - int(lo)]
            if out is None:
                out = torch.empty((len(index), *rows.shape[1:]), dtype=rows.dtype)
            out[sel] = rows.to(out.dtype)
        return out


def gather(images, index: torch.Tensor):
    """``images[index]`` for a tensor or a lazy array; a lazy array is indexed lazily (a view of rows)."""
    if isinstance(images, torch.Tensor):
        return images[index]
    return _Rows(images, index)


class _Rows:
    """Selected rows of a lazy array (read when indexed)."""

    def __init__(self, base, index: torch.Tensor):
        self.base, self.index = base, torch.as_tensor(index, dtype=torch.long)
        self.shape = torch.Size((len(self.index), *base.shape[1:]))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index) -> torch.Tensor:
        return self.base[self.index[torch.as_tensor(index, dtype=torch.long)]]

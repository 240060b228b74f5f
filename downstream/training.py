"""A small, seeded training loop shared by the downstream tasks.

Every ``train_on`` condition gets the same number of optimiser steps (not epochs), so real, synthetic and
real+synthetic models are compared at equal compute. Batches are epoch-wise permutations drawn from a generator seeded
by the run seed, so a fixed seed gives identical weights on CPU.
"""
from __future__ import annotations

import sys
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medsynbench.downstream.config import TrainSettings
from medsynbench.nn import make_optimizer as _make_optimizer
from medsynbench.nn import random_flips  # re-exported: one copy of the flips


def batch_stream(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full batches of indices; each epoch is a fresh permutation (an epoch's tail wraps into the next)."""
    batch_size = min(batch_size, n)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def make_optimizer(s: TrainSettings, params) -> torch.optim.Optimizer:
    """The downstream optimiser from its settings (one factory: :func:`medsynbench.nn.make_optimizer`)."""
    return _make_optimizer(params, s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=0.9)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad H and W up to a multiple (U-Net encoders halve the size ``depth`` times)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def forward(model: torch.nn.Module, x: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = model(pad_to_multiple(x, multiple) if multiple > 1 else x)
    return out[..., :h, :w] if out.ndim == 4 else out


def fit(model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor, targets: torch.Tensor, s: TrainSettings,
        steps: int, seed: int, device: str, dense_targets: bool, multiple: int = 1, desc: str = "downstream",
        augment: Callable | None = None) -> float:
    """Train in place for ``steps`` steps; returns the mean loss of the last 10% of steps (for the log).

    ``augment(images, masks_or_None, generator) -> (images, masks_or_None)`` (downstream/augment.py), when given,
    replaces the random flips of ``augment_flip``: the real_augmented scenario's per-batch classic augmentation."""
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(s, model.parameters())
    batches = batch_stream(len(images), s.batch_size, generator)
    tail, tail_start = [], int(steps * 0.9)
    # a bar only on a terminal: in a log file or a SLURM .err it would be one line per refresh (the runner logs the
    # scenario, its image counts, score and seconds)
    bar = tqdm(range(steps), desc=desc, disable=not (s.progress and sys.stderr.isatty()), leave=False)
    for step in bar:
        idx = next(batches)
        x, y = images[idx], targets[idx]
        if augment is not None:
            x, y_dense = augment(x, y if dense_targets else None, generator)
            y = y_dense if dense_targets else y
        elif s.augment_flip:
            x, y_dense = random_flips(x, y if dense_targets else None, generator)
            y = y_dense if dense_targets else y
        loss = loss_fn(forward(model, x.to(device), multiple), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= tail_start:
            tail.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return sum(tail) / max(len(tail), 1)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: str, multiple: int = 1) -> torch.Tensor:
    """Logits for all images, in eval mode, on CPU."""
    model.to(device).eval()
    return torch.cat([forward(model, images[i:i + batch_size].to(device), multiple).float().cpu()
                      for i in range(0, len(images), batch_size)])

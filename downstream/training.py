"""A small, seeded training loop shared by the downstream tasks.

Every ``train_on`` condition gets the same number of optimiser steps (not epochs), so real, synthetic and
real+synthetic models are compared at equal compute. Batches are epoch-wise permutations drawn from a generator seeded
by the run seed, so a fixed seed gives identical weights on CPU.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medsynbench.downstream.config import TrainSettings
from medsynbench.nn import make_optimizer as _make_optimizer


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


def fit(model: torch.nn.Module, loss_fn: Callable, images, targets: torch.Tensor, s: TrainSettings,
        steps: int, seed: int, device: str, dense_targets: bool, multiple: int = 1, desc: str = "downstream",
        augment: Callable | None = None, val: tuple[torch.Tensor, torch.Tensor] | None = None,
        val_every: int | None = None) -> dict:
    """Train in place for at most ``steps`` steps; returns what happened (``final_train_loss``: the mean loss of the
    last 10% of the steps run, ``steps_run``, and with validation ``best_step``, ``best_val_loss``, ``stopped_early``,
    ``n_validations``).

    ``images`` is a tensor or a lazy array (downstream/synthetic.py: only a batch's rows are read).
    ``augment(images, masks_or_None, generator) -> (images, masks_or_None)`` (downstream/augment.py: the
    ``real_augmented`` augmentation, the ``augment_flip`` flips, or normalisation only) is applied per batch.
    ``val`` = (validation inputs, ready for the model, and targets): the model is scored on them (mean loss, eval
    mode) every ``val_every`` steps and at the end; the weights with the lowest validation loss are restored, and
    training stops after ``s.patience`` validations without an improvement of more than ``s.min_delta``."""
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(s, model.parameters())
    batches = batch_stream(len(images), s.batch_size, generator)
    losses = []
    best = {"loss": math.inf, "step": 0, "state": None}
    bad, n_val, stopped = 0, 0, False
    every = val_every or s.val_every or -(-len(images) // min(s.batch_size, len(images)))  # default: once per epoch

    def validate(step: int) -> bool:
        """Score the validation split; True when training should stop (patience exhausted)."""
        nonlocal bad, n_val
        n_val += 1
        loss = evaluate_loss(model, loss_fn, val[0], val[1], s.eval_batch_size, device, multiple)
        model.train()
        if loss < best["loss"] - s.min_delta or best["state"] is None:
            best.update(loss=loss, step=step, state={k: v.detach().clone() for k, v in model.state_dict().items()})
            bad = 0
        else:
            bad += 1
        return s.patience is not None and bad >= s.patience

    # a bar only on a terminal: in a log file or a SLURM .err it would be one line per refresh (the runner logs the
    # scenario, its image counts, score and seconds)
    bar = tqdm(range(steps), desc=desc, disable=not (s.progress and sys.stderr.isatty()), leave=False)
    step = 0
    for step in bar:
        idx = next(batches)
        x, y = images[idx], targets[idx]
        if augment is not None:
            x, y_dense = augment(x, y if dense_targets else None, generator)
            y = y_dense if dense_targets else y
        loss = loss_fn(forward(model, x.float().to(device), multiple), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if val is not None and (step + 1) % every == 0 and validate(step + 1):
            stopped = True
            break
    steps_run = step + 1 if steps else 0
    tail = losses[int(len(losses) * 0.9):]
    out = {"final_train_loss": sum(tail) / max(len(tail), 1), "steps_run": steps_run}
    if val is not None:
        if steps_run and steps_run % every and not stopped:  # the last weights are a candidate too
            validate(steps_run)
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        out.update(best_step=best["step"], best_val_loss=None if best["state"] is None else best["loss"],
                   stopped_early=stopped, n_validations=n_val, val_every=every)
    return out


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor, targets: torch.Tensor,
                  batch_size: int, device: str, multiple: int = 1) -> float:
    """Mean loss over a set, in eval mode (weighted by batch size)."""
    model.to(device).eval()
    total, n = 0.0, 0
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].float().to(device), targets[i:i + batch_size].to(device)
        total += float(loss_fn(forward(model, x, multiple), y)) * len(x)
        n += len(x)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: str, multiple: int = 1) -> torch.Tensor:
    """Logits for all images, in eval mode, on CPU."""
    model.to(device).eval()
    return torch.cat([forward(model, images[i:i + batch_size].float().to(device), multiple).float().cpu()
                      for i in range(0, len(images), batch_size)])

"""The training loop of one run: data batches, GAN steps, EMA, logging, snapshots, resume, divergence.

The GAN itself (losses, D/G updates, n_critic, augmentation) lives behind ``gan.train_step``; this loop only owns
what every GAN shares. Resuming is exact: the batch order is a pure function of (seed, step), and every checkpoint
holds model + optimiser + EMA state and all RNG states, so a run killed at any point and launched again with the
same config ends with the same weights as an uninterrupted run (on CPU; GPU kernels may be non-deterministic).
"""
from __future__ import annotations

import functools
import logging
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

from medsynbench.benchmark.data.types import DatasetBundle
from medsynbench.benchmark.utils import rng_state, seed_everything, set_rng_state
from medsynbench.gans import draw_train_masks
from medsynbench.amp import Amp
from medsynbench.checkpoints import (CheckpointError, CheckpointWarning, checkpoint_path,
                                     checkpoint_paths, latest_valid_checkpoint)
from medsynbench.io import atomic_torch_save, atomic_write, remove_stale_temporaries

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""


class StopRequested(RuntimeError):
    """``train.stop_after`` was reached: the run stops as if it had been killed (used to test resume)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training: the step under way was finished and a resumable checkpoint written; ``str()``
    is the one-line message for the user."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint (no step was finished)"
        super().__init__(f"interrupted at step {step}; {where}; relaunch the same command to resume")


class _SigintFlag:
    """While training, the first Ctrl-C (SIGINT) only sets a flag that the loop reads after each finished step (so
    that the checkpoint holds a consistent state); a second one interrupts at once. A no-op outside the main thread,
    where signal handlers cannot be set."""

    def __init__(self):
        self.raised = False
        self._installed = False
        self._before = None

    def _handle(self, signum, frame):
        self.raised = True
        signal.signal(signal.SIGINT, self._before or signal.default_int_handler)  # a second Ctrl-C: stop at once
        log.warning("Ctrl-C: finishing the current step and saving a checkpoint (Ctrl-C again to stop at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._before = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._before or signal.default_int_handler)
            self._installed = False
        return False


@dataclass
class TrainResult:
    gan: torch.nn.Module
    steps_done: int
    status: str                 # completed | diverged
    seconds: float
    resumed_from: int | None
    last_losses: dict
    checkpoint: Path | None


def build_gan(cfg, bundle: DatasetBundle, device: torch.device):
    """Instantiate ``cfg.gan`` for this dataset's image size, channels, masks and labels."""
    gan = hydra.utils.instantiate(
        cfg.gan,
        image_size=bundle.train.images.shape[-1],
        image_channels=bundle.channels,
        num_mask_classes=bundle.num_mask_classes,
        num_classes=bundle.num_classes if cfg.gan.get("conditional", False) else 0,
        _convert_="all",
    )
    return gan.to(device)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: epochs of seeded permutations, a pure function of (seed, step)."""
    start = step * batch_size
    out, pos = [], start
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = _epoch_permutation(n, seed, epoch)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
        pos += take
    return torch.tensor(out)


def save_checkpoint(run_dir: Path, gan, optimizers: dict, step: int, keep_all: bool, extra: dict) -> Path:
    """Atomically write the snapshot of ``step``: tensors and plain values only (loads with ``weights_only=True``)."""
    path = checkpoint_path(run_dir, step)
    atomic_torch_save({
        "step": int(step),
        "model_args": gan.model_args(),
        "state_dict": gan.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "rng": rng_state(),
        **extra,
    }, path)
    if not keep_all:
        for old in checkpoint_paths(run_dir):
            if old != path:
                old.unlink(missing_ok=True)
    return path


def _resume_check(gan, optimizers: dict):
    """Reject (so that the loop falls back to an older one) a checkpoint that does not fit this model."""
    own = {k: tuple(v.shape) for k, v in gan.state_dict().items()}

    def check(path: Path, ckpt: dict) -> None:
        theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
        if theirs != own:
            diff = sorted(set(own) ^ set(theirs)) or sorted(k for k in own if own[k] != theirs[k])
            raise CheckpointError(path, f"its state_dict does not fit this model (differs at {diff[:5]})")
        missing = sorted(set(optimizers) - set(ckpt["optimizers"]))
        if missing:
            raise CheckpointError(path, f"no optimizer state for {missing}")
    return check


def _clean_temporaries(run_dir: Path) -> None:
    """Delete the hidden ``.step_*.tmp`` files a writer killed mid-way left (this process owns the run dir)."""
    for folder in (run_dir / "checkpoints", run_dir / "samples"):
        if folder.is_dir():
            removed = remove_stale_temporaries(folder)
            if removed:
                log.warning("removed %d stale temporary file(s) left by an interrupted write: %s", len(removed),
                            ", ".join(p.name for p in removed))


def _sample_masks(gan, bundle: DatasetBundle, n: int, seed: int):
    """Mask-conditioned models draw sample grids from real training masks too (as evaluation does)."""
    if getattr(gan, "takes_masks", False) and bundle.train.masks is not None:
        return draw_train_masks(bundle.train.masks, n, seed)
    return None


def save_sample_grid(gan, path: Path, n: int, seed: int, bundle: DatasetBundle) -> None:
    """Fixed latents (same seed every time) so grids from successive snapshots are comparable."""
    out = gan.sample(n, seed=seed, batch_size=n, masks=_sample_masks(gan, bundle, n, seed))
    images = (out["images"].float() + 1) / 2
    if images.shape[1] not in (1, 3):
        images = images[:, :1]
    tiles = [images]
    if out.get("masks") is not None and bundle.num_mask_classes > 1:
        masks = out["masks"].float().unsqueeze(1) / (bundle.num_mask_classes - 1)
        tiles.append(masks.expand(-1, images.shape[1], -1, -1))
    grid = torch.stack(tiles, dim=1).flatten(0, 1)  # image, mask, image, mask, ...
    atomic_write(path, lambda fh: save_image(grid.clamp(0, 1), fh, format="png",
                                             nrow=2 * int(math.ceil(math.sqrt(n))) if len(tiles) > 1 else
                                             int(math.ceil(math.sqrt(n)))))


def train(cfg, bundle: DatasetBundle, run_dir: Path, device: torch.device) -> TrainResult:
    tcfg = cfg.train
    run_dir = Path(run_dir)

    # --- setup: model, optimisers, and the state of an earlier attempt of this same run --------------------------
    seed_everything(cfg.seed)
    gan = build_gan(cfg, bundle, device)
    optimizers = gan.configure_optimizers(lr_g=tcfg.lr_g, lr_d=tcfg.lr_d, betas=tuple(tcfg.betas),
                                          optimizer=tcfg.optimizer)
    amp = Amp(device.type, cfg.precision)
    _clean_temporaries(run_dir)
    start_step, resumed_from, ckpt_path = 0, None, None
    found = latest_valid_checkpoint(run_dir, map_location=device, resume=True, check=_resume_check(gan, optimizers))
    if found is not None:
        ckpt_path, ckpt = found
        gan.load_state_dict(ckpt["state_dict"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        amp.load_state_dict(ckpt.get("grad_scaler"))
        set_rng_state(ckpt["rng"])
        start_step = resumed_from = ckpt["step"]
        log.info("resuming from %s (step %d)", ckpt_path, start_step)
    elif checkpoint_paths(run_dir):
        msg = (f"no valid checkpoint in {run_dir / 'checkpoints'} (every one is corrupt or unreadable, see the "
               "warnings above): starting training from scratch")
        log.warning("%s", msg)
        warnings.warn(msg, CheckpointWarning, stacklevel=2)

    # --- the loop ----------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    bar = tqdm(range(start_step, tcfg.steps), initial=start_step, total=tcfg.steps, desc=f"train {run_dir.name}",
               disable=not (tcfg.progress and sys.stderr.isatty()), dynamic_ncols=True)  # logs: log_every lines
    # a checkpoint written off the checkpoint_every cadence by an interrupted attempt: dropped at the next regular one
    off_cadence = (ckpt_path if resumed_from and resumed_from % tcfg.checkpoint_every and resumed_from < tcfg.steps
                   else None)
    with _SigintFlag() as sigint:
        status, losses, step, saved = _loop(cfg, gan, optimizers, amp, bundle, run_dir, device, bar, start_step,
                                            sigint, off_cadence)
    bar.close()
    ckpt_path = saved or ckpt_path

    return TrainResult(gan=gan, steps_done=step if status == "diverged" else tcfg.steps, status=status,
                       seconds=time.perf_counter() - t0, resumed_from=resumed_from, last_losses=losses,
                       checkpoint=ckpt_path)


def _loop(cfg, gan, optimizers, amp, bundle: DatasetBundle, run_dir: Path, device, bar, start_step: int, sigint,
          off_cadence: Path | None):
    """The steps from ``start_step``: returns (status, last losses, last step, last checkpoint written or None)."""
    tcfg = cfg.train
    images = bundle.train.images
    masks, labels = bundle.train.masks, bundle.train.labels
    n_train = len(bundle.train)
    sample_seed = cfg.seed + 12345
    max_overflow_skips = 100  # 16-mixed: consecutive steps the gradient scaler may skip before "diverged"
    overflow_skips = 0
    losses, status, step, saved = {}, "completed", start_step, None
    for step in bar:
        idx = batch_indices(step, tcfg.batch_size, n_train, cfg.seed)
        batch = {"images": images[idx].to(device, non_blocking=True)}
        if masks is not None:
            batch["masks"] = masks[idx].to(device, non_blocking=True)
        if labels is not None:
            batch["labels"] = labels[idx].to(device, non_blocking=True)

        amp.skipped_steps = 0
        losses = gan.train_step(batch, optimizers, step, amp=amp)
        if not all(math.isfinite(v) for v in losses.values()):
            overflow_skips = overflow_skips + 1 if amp.skipped_steps else 0
            if not overflow_skips or overflow_skips > max_overflow_skips:
                status = "diverged"
                log.warning("step %d: non-finite loss %s — run diverged, stopping", step, losses)
                break
            # 16-mixed: an fp16 overflow; the gradient scaler skipped the update and lowered its scale.
            log.info("step %d: fp16 overflow %s, update skipped by the gradient scaler", step, losses)
        else:
            overflow_skips = 0
        # EMA of the generator weights: g_ema copies the generator until ema_start.
        gan.update_ema(tcfg.ema_decay if step >= tcfg.ema_start else 0.0)

        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.steps:
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            log.info("step %d/%d %s", done, tcfg.steps, " ".join(f"{k}={v:.4f}" for k, v in losses.items()))
        if done % tcfg.sample_every == 0 or done == tcfg.steps:
            save_sample_grid(gan, run_dir / "samples" / f"step_{done:07d}.png", tcfg.sample_grid, sample_seed, bundle)
        if done % tcfg.checkpoint_every == 0 or done == tcfg.steps:
            saved = save_checkpoint(run_dir, gan, optimizers, done, tcfg.keep_checkpoints,
                                    {"losses": losses, "grad_scaler": amp.state_dict()})
            if off_cadence is not None:
                off_cadence.unlink(missing_ok=True)
                off_cadence = None
        elif sigint.raised:  # Ctrl-C: this step is finished; save it so that a relaunch resumes right here
            saved = save_checkpoint(run_dir, gan, optimizers, done, tcfg.keep_checkpoints,
                                    {"losses": losses, "grad_scaler": amp.state_dict()})
        if sigint.raised:
            bar.close()
            raise TrainingInterrupted(done, saved)
        if tcfg.stop_after is not None and done >= tcfg.stop_after and done < tcfg.steps:
            raise StopRequested(f"stopped after step {done} (train.stop_after)")
    else:
        step = tcfg.steps
    return status, losses, step, saved

"""Mixed precision: forward passes in autocast, backward passes, input-gradient penalties and optimiser steps outside
it through ``amp``; ``16-mixed`` uses a GradScaler (exercised on the CPU, where torch supports it); the scaler's
state is checkpointed, so a 16-mixed run resumes exactly."""
from __future__ import annotations

import math

import pytest
import torch

from medsynbench.benchmark.data import load_dataset
from medsynbench.benchmark.train_loop import StopRequested, train
from medsynbench.amp import Amp
from medsynbench.checkpoints import checkpoint_paths, load_checkpoint
from tests.conftest import SMOKE, compose_config
from tests.test_gans_base import build, tiny_batch

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {
    "dcgan": ("dcgan", ("gan.g_filters=8", "gan.d_filters=8", "gan.diffaugment=true", "gan.fm_weight=1.0"), 2),
    "wgan_gp": ("wgan_gp", ("gan.g_filters=8", "gan.d_filters=8", "gan.n_critic=2"), 2),
    "spade": ("spade", ("gan.g_filters=8", "gan.d_filters=8", "gan.spade_hidden=8", "gan.latent_dim=16",
                        "gan.d_layers=3"), 3),
    "stylegan2": ("stylegan2", ("gan.channel_base=256", "gan.channel_max=16", "gan.latent_dim=16", "gan.w_dim=16",
                                "gan.r1_interval=1", "gan.pl_interval=1", "gan.ada_interval=1",
                                "gan.ada_p_init=0.2"), 2),
}


def _scaler_on_cpu() -> bool:
    try:
        return torch.amp.GradScaler("cpu").is_enabled()
    except Exception:  # older torch: GradScaler is CUDA-only
        return False


class RecordingAmp(Amp):
    """Records whether autocast was on when the model asked for backward / grad / step."""

    def __init__(self, precision: str):
        super().__init__("cpu", precision)
        self.autocasts, self.calls = 0, []

    def autocast(self):
        self.autocasts += 1
        return super().autocast()

    def backward(self, loss):
        self.calls.append(("backward", torch.is_autocast_enabled("cpu")))
        super().backward(loss)

    def grad(self, output, inputs):
        self.calls.append(("grad", torch.is_autocast_enabled("cpu")))
        return super().grad(output, inputs)

    def step(self, optimizer):
        self.calls.append(("step", torch.is_autocast_enabled("cpu")))
        super().step(optimizer)


def _train_steps(model: str, amp: Amp, steps: int = 3):
    name, overrides, num_mask_classes = MODELS[model]
    torch.manual_seed(0)
    gan = build(name, *overrides, num_mask_classes=num_mask_classes)
    opts = gan.configure_optimizers(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999))
    direct_steps = []
    for opt in opts.values():  # every optimiser step must go through amp.step
        opt.register_step_pre_hook(lambda *_: direct_steps.append(torch.is_autocast_enabled("cpu")))
    before = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    history = [gan.train_step(tiny_batch(num_mask_classes=num_mask_classes, seed=s), opts, s, amp=amp)
               for s in range(steps)]
    changed = any(not torch.equal(before[k], v) for k, v in gan.generator.state_dict().items())
    return history, changed, direct_steps


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_backward_and_steps_run_outside_autocast_with_finite_losses(model, precision):
    amp = RecordingAmp(precision)
    history, changed, direct_steps = _train_steps(model, amp)
    assert all(math.isfinite(v) for losses in history for v in losses.values()), history
    assert changed
    assert amp.autocasts > 0
    kinds = [kind for kind, _ in amp.calls]
    assert kinds.count("backward") == kinds.count("step") == len(direct_steps) > 0
    if model in ("wgan_gp", "stylegan2"):
        assert "grad" in kinds  # gradient penalty / R1 / path length go through amp.grad
    assert not any(on for _, on in amp.calls), f"called inside autocast: {amp.calls}"
    assert not any(direct_steps)


@pytest.mark.skipif(not _scaler_on_cpu(), reason="this torch has no GradScaler for the CPU (CUDA-only)")
@pytest.mark.parametrize("model", sorted(MODELS))
def test_fp16_uses_the_gradient_scaler(model):
    amp = RecordingAmp("16-mixed")
    assert amp.scaling and amp.scaler.is_enabled()
    history, changed, direct_steps = _train_steps(model, amp, steps=4)
    kinds = [kind for kind, _ in amp.calls]
    # an update the scaler skips (inf/NaN gradients) never reaches the optimiser
    assert kinds.count("step") == len(direct_steps) + amp.skipped_steps and direct_steps
    assert not any(on for _, on in amp.calls)
    # the scaler backs off from 2**16 on overflow and skips those updates, but some updates go through
    assert amp.scaler.get_scale() <= 2.0 ** 16
    assert amp.skipped_steps < kinds.count("step") and changed
    assert all(math.isfinite(v) for v in history[-1].values()) or amp.skipped_steps


def test_scaled_input_gradient_equals_the_plain_one():
    x = torch.randn(4, 3, requires_grad=True)
    plain = Amp("cpu", "32").grad((x ** 3).sum(), x)
    if not _scaler_on_cpu():
        pytest.skip("this torch has no GradScaler for the CPU (CUDA-only)")
    scaled = Amp("cpu", "16-mixed").grad((x ** 3).sum(), x)
    assert torch.allclose(plain, scaled) and scaled.requires_grad


@pytest.mark.skipif(not _scaler_on_cpu(), reason="this torch has no GradScaler for the CPU (CUDA-only)")
def test_fp16_run_checkpoints_the_scaler_and_resumes_exactly(tmp_path):
    def cfg(results, *extra):
        return compose_config([*SMOKE, f"paths.results_dir={results}", "precision=16-mixed", "train.steps=6",
                               "data.train_size=16", *extra])

    full_cfg = cfg(tmp_path / "a")
    bundle = load_dataset(full_cfg.dataset, full_cfg.data)
    full = train(full_cfg, bundle, tmp_path / "a" / "run", torch.device("cpu"))
    assert full.status == "completed"
    ckpt = load_checkpoint(checkpoint_paths(tmp_path / "a" / "run")[-1], resume=True)
    assert ckpt["grad_scaler"]["scale"] <= 2.0 ** 16
    with pytest.raises(StopRequested):
        train(cfg(tmp_path / "b", "train.stop_after=3"), bundle, tmp_path / "b" / "run", torch.device("cpu"))
    resumed = train(cfg(tmp_path / "b"), bundle, tmp_path / "b" / "run", torch.device("cpu"))
    assert resumed.resumed_from == 2
    a, b = full.gan.state_dict(), resumed.gan.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

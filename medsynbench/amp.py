"""Mixed precision for training steps: autocast for forward passes, a gradient scaler for ``16-mixed``.

A model's ``train_step(batch, optimizers, step, amp)`` runs its forward passes (and losses) inside
``amp.autocast()`` and leaves backward passes, input-gradient penalties and optimiser steps to ``amp``, outside
autocast:

    with amp.autocast():
        loss = loss_fn(model(x))
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss)          # scaled by the GradScaler under 16-mixed
    amp.step(optimizer)         # unscale, skip on inf/NaN, step, update the scale

and ``amp.grad(output, input)`` for gradients that enter a loss (gradient penalty, R1, path length): the output is
scaled before ``autograd.grad`` and the gradient unscaled after, as in PyTorch's AMP recipe for gradient penalties.
With ``precision=32`` every call is the plain PyTorch operation (bit-identical to code without ``amp``).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"32": None, "fp32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Amp:
    """Autocast + gradient-scaler helper for one device type and precision (see the module docstring)."""

    def __init__(self, device_type: str = "cpu", precision: str = "32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of '32', 'bf16-mixed', '16-mixed', got {precision!r}")
        self.device_type = str(device_type)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        # fp16 has a narrow exponent range: gradients are scaled so that small ones do not flush to zero.
        # bf16 has fp32's range and needs no scaler.
        self.scaler = torch.amp.GradScaler(self.device_type) if self.dtype is torch.float16 else None
        self.skipped_steps = 0  # optimiser steps the scaler skipped (inf/NaN gradients), for the training loop

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scaling(self) -> bool:
        return self.scaler is not None

    def autocast(self):
        """Context for forward passes and losses (a no-op at full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss.float()).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimiser step; under 16-mixed: unscale, skip when a gradient is inf/NaN, then update the scale."""
        if self.scaler is None:
            optimizer.step()
            return
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < before:
            self.skipped_steps += 1

    def grad(self, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """d output / d inputs with ``create_graph=True`` (for penalties that are part of a loss)."""
        if self.scaler is None:
            (g,) = torch.autograd.grad(output, inputs, create_graph=True)
            return g
        (g,) = torch.autograd.grad(self.scaler.scale(output.float()), inputs, create_graph=True)
        return g / self.scaler.get_scale()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


#: full precision: plain backward/step, no autocast (the default of ``train_step``)
FP32 = Amp("cpu", "32")

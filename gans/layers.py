"""Building blocks chosen by config name: activations, normalisation layers, weight init, spectral norm
(the architecture keys of the empirical study's Table 1)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu")
NORMS = ("batch", "instance", "none")
INITS = ("normal", "xavier", "xavier_uniform", "kaiming", "default")


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "elu":
        return nn.ELU()
    if name == "selu":
        return nn.SELU()
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def norm2d(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {name!r}; choose one of {NORMS}")


def init_weights(module: nn.Module, scheme: str, gain: float) -> None:
    """Initialise conv/linear weights: ``normal`` = N(0, gain) (DCGAN uses gain 0.02), ``xavier`` /
    ``xavier_uniform`` = Glorot with that gain, ``kaiming`` = He normal (fan-in, ReLU) scaled by gain,
    ``default`` = leave PyTorch's init. Biases are zeroed; norm layers start at weight 1, bias 0."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {INITS}")
    if scheme == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            w = m.weight
            if scheme == "normal":
                nn.init.normal_(w, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(w, gain=gain)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w, gain=gain)
            else:
                nn.init.kaiming_normal_(w, a=0.0, nonlinearity="relu")
                with torch.no_grad():
                    w.mul_(gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv / linear / embedding weight, in place."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return module


def num_doublings(image_size: int, base: int = 4, min_size: int = 8, max_size: int = 1024) -> int:
    """log2(image_size / base), checking the size is a power of two in the supported range."""
    if image_size < min_size or image_size > max_size or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two in [{min_size}, {max_size}], got {image_size}")
    return int(math.log2(image_size // base))

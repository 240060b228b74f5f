"""Perceptual path length (Karras et al. 2019; StyleGAN2's ``ppl_wend`` protocol by default) for style-based
generators, and an LPIPS distance that loads its VGG16 weights from a local file.

PPL = E[d(G(lerp(w0, w1, t)), G(lerp(w0, w1, t + ε))) / ε²] with w = mapping(z), the same noise maps for both
images of a pair, and the mean taken after dropping distances outside the 1st-99th percentiles. ``space="z"`` uses
slerp between latents instead (``ppl_zfull``); ``sampling="end"`` fixes t = 0, ``"full"`` draws t ~ U(0, 1).
Only the image channels go into the distance (the generator may also emit one-hot mask channels).

The distance is any ``fn(img_a, img_b) -> [B]`` on [-1, 1] images. The published numbers use LPIPS with the
ImageNet VGG16 backbone: :class:`LPIPSDistance` takes that backbone as a local torchvision ``vgg16`` state-dict file
(no download here) and the LPIPS linear-layer weights shipped inside torchmetrics, and names the weights in its
description; a PPL from other weights is labelled with them and is not the published PPL.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsynbench.metrics.extractors.base import file_sha256
from medsynbench.metrics.registry import register_metric

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 file name (torch hub cache)


class LPIPSDistance(torch.nn.Module):
    """LPIPS(VGG16) between [-1, 1] images (grayscale repeated to RGB), via torchmetrics' LPIPS network.

    ``vgg_weights_path``: torchvision ``vgg16`` state dict (``features.*`` keys); None looks for
    ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``. Missing weights raise an error that says how to provide them.
    """

    def __init__(self, vgg_weights_path: str | None = None, lpips_weights_path: str | None = None):
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        path = Path(os.path.expanduser(vgg_weights_path)) if vgg_weights_path else \
            Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
        if not path.is_file():
            raise RuntimeError(
                f"LPIPS: the VGG16 backbone weights are missing ({path}). Provide a torchvision vgg16 state dict by "
                f"passing vgg_weights_path=/path/to/{VGG16_FILE}, or copy it to "
                f"{Path(torch.hub.get_dir()) / 'checkpoints' / VGG16_FILE} (set $TORCH_HOME to move it); "
                "it is torchvision's VGG16_Weights.IMAGENET1K_V1 download. No weights are downloaded here.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "features.0.weight" not in state:  # fail before building the network
            raise RuntimeError(f"LPIPS: {path} is not a torchvision vgg16 state dict (no 'features.0.weight')")
        # pnet_rand: build the backbone without torchvision's download; its weights come from the local file
        self.net = _LPIPS(pretrained=True, net="vgg", pnet_rand=True, model_path=lpips_weights_path).eval()
        self._load_backbone(state, path)
        self.net.requires_grad_(False)
        self.weights, self.weights_sha256 = str(path), file_sha256(path)

    def _load_backbone(self, state: dict, path: Path) -> None:
        """Copy torchvision's ``features.<i>.*`` tensors into the LPIPS slices (which keep the layer index)."""
        targets = {}
        for slice_name, module in self.net.net.named_children():
            for idx, layer in module.named_children():
                for pname, param in layer.named_parameters(recurse=False):
                    targets[f"features.{idx}.{pname}"] = param
        missing = [k for k in targets if k not in state]
        if missing:
            raise RuntimeError(f"LPIPS: {path} is not a torchvision vgg16 state dict (missing {missing[:3]} ...)")
        with torch.no_grad():
            for key, param in targets.items():
                if state[key].shape != param.shape:
                    raise RuntimeError(f"LPIPS: {path}: {key} has shape {tuple(state[key].shape)}, "
                                       f"expected {tuple(param.shape)}")
                param.copy_(state[key])

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        if a.shape[1] != 3:
            raise ValueError(f"LPIPS needs 1- or 3-channel images, got {a.shape[1]} channels")
        return self.net(a.float(), b.float()).flatten()

    def describe(self) -> dict:
        return {"name": "lpips_vgg16", "weights": self.weights, "weights_sha256": self.weights_sha256,
                "lpips_linear_weights": "torchmetrics lpips_models/vgg.pth"}


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = (a * b).sum(-1, keepdim=True).clamp(-1, 1).acos()
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _style_networks(gan, ema: bool):
    net = getattr(gan, "g_ema" if ema else "generator", None)
    if net is None or not (hasattr(net, "mapping") and hasattr(net, "synthesis")):
        raise ValueError(f"perceptual path length needs a style-based generator (mapping + synthesis networks); "
                         f"{getattr(gan, 'name', type(gan).__name__)} has none")
    return net


@torch.no_grad()
def perceptual_path_length(gan, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           num_samples: int = 10000, epsilon: float = 1e-4, space: str = "w", sampling: str = "end",
                           batch_size: int = 32, seed: int = 0, ema: bool = True, device: str = "cpu") -> dict:
    """PPL of ``gan``'s (EMA) style generator under ``distance``; returns value, std and the protocol fields."""
    if space not in ("w", "z") or sampling not in ("end", "full"):
        raise ValueError(f"PPL space must be 'w' or 'z' and sampling 'end' or 'full', got {space!r}, {sampling!r}")
    if num_samples < 2:
        raise ValueError(f"PPL needs at least 2 samples, got {num_samples}")
    net = _style_networks(gan, ema).to(device)
    was_training = net.training
    net.eval()
    gen = torch.Generator().manual_seed(int(seed))
    dists = []
    try:
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            z = torch.randn(2 * b, gan.latent_dim, generator=gen)
            t = torch.rand(b, generator=gen) * (1.0 if sampling == "full" else 0.0)
            labels = (torch.randint(gan.num_classes, (b,), generator=gen).repeat(2).to(device)
                      if getattr(gan, "num_classes", 0) else None)
            noise = [torch.randn(b, 1, h, w, generator=gen).repeat(2, 1, 1, 1).to(device)
                     for h, w in net.synthesis.noise_shapes()]
            z, t = z.to(device), t.to(device)
            if space == "w":
                w = net.mapping(z, labels)
                w0, w1 = w[:b], w[b:]
                w = torch.cat([w0.lerp(w1, t[:, None]), w0.lerp(w1, (t + epsilon)[:, None])])
            else:
                zt = torch.cat([_slerp(z[:b], z[b:], t), _slerp(z[:b], z[b:], t + epsilon)])
                w = net.mapping(zt, labels)
            img = net.synthesis(w.unsqueeze(1).expand(-1, net.num_ws, -1), noise)[:, :gan.image_channels]
            d = torch.as_tensor(distance(img[:b], img[b:])).flatten().double().cpu()
            dists.append(d / epsilon ** 2)
    finally:
        net.train(was_training)
    dist = torch.cat(dists).numpy()
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    kept = dist[(dist >= lo) & (dist <= hi)]
    return {"value": float(kept.mean()), "std": float(kept.std()), "num_samples": num_samples, "epsilon": epsilon,
            "space": space, "sampling": sampling, "seed": seed, "kept": int(len(kept)),
            "protocol": f"ppl_{space}{sampling} (StyleGAN2), 1-99 percentile filter, image channels only"}


@register_metric("ppl", higher_is_better=False, kind="generator")
def ppl_metric(gan, distance=None, vgg_weights_path: str | None = None, **options) -> dict:
    """Perceptual path length of a style-based generator (LPIPS-VGG16 from local weights unless ``distance``)."""
    if distance is None:
        distance = LPIPSDistance(vgg_weights_path)
    out = perceptual_path_length(gan, distance, **options)
    desc = distance.describe() if hasattr(distance, "describe") else {"name": getattr(distance, "__name__", "custom")}
    return {**out, "distance": desc.get("name"), "weights": desc.get("weights", "n/a"),
            "weights_sha256": desc.get("weights_sha256")}

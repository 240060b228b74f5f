"""Domain feature space that needs no outside weights: the encoder of a small U-Net trained on the real training split.

With masks the U-Net is trained for segmentation (the empirical study's U-Net feature space); without masks it is
trained as a denoising autoencoder (noise + dropped patches → clean image), which forces the encoder to model
image content. Training runs once and is cached by the content hash of the training images/masks and the settings,
so every run of a sweep on the same split shares one feature space; ``describe()`` records that hash.
Features: the deepest encoder stage, global-average-pooled.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medsynbench.io import atomic_write, file_lock, remove_stale_temporaries
from medsynbench.metrics.cache import array_hash, content_hash
from medsynbench.metrics.extractors import register_extractor
from medsynbench.metrics.extractors.base import FeatureExtractor, Preprocess


def _build(in_channels: int, classes: int, encoder_name: str, depth: int):
    import segmentation_models_pytorch as smp
    channels = (128, 64, 32, 16, 8)[-depth:] if depth < 5 else (256, 128, 64, 32, 16)
    return smp.Unet(encoder_name=encoder_name, encoder_weights=None, encoder_depth=depth, in_channels=in_channels,
                    classes=classes, decoder_channels=channels)


class UNetEncoder(FeatureExtractor):
    name = "unet_encoder"
    metric_suffix = "unet"

    def __init__(self, train_set=None, train_images=None, train_masks=None, cache_dir: str | None = None,
                 device: str = "cpu", seed: int = 0, objective: str = "auto", encoder_name: str = "resnet18",
                 encoder_depth: int = 3, steps: int = 150, batch_size: int = 32, lr: float = 2e-3,
                 image_size: int | None = None, progress: bool = False, **_):
        super().__init__()
        if train_set is not None:
            train_images, train_masks = train_set.images, train_set.masks
        if train_images is None:
            raise ValueError("unet_encoder is trained on the real training split: pass train_set= (an ImageSet) "
                             "or train_images=")
        images = torch.as_tensor(train_images).float()
        if objective == "auto":
            objective = "segmentation" if train_masks is not None else "denoising"
        if objective == "segmentation" and train_masks is None:
            raise ValueError("unet_encoder objective=segmentation needs training masks")
        size = image_size or images.shape[-1]
        if size % (2 ** encoder_depth):
            raise ValueError(f"unet_encoder: image size {size} must be divisible by 2**encoder_depth={2 ** encoder_depth}")
        self.preprocess = Preprocess(gray_to_rgb="none", resize=size, resize_filter="bilinear",
                                     normalise="minus_one_one")
        self.settings = {"objective": objective, "encoder_name": encoder_name, "encoder_depth": encoder_depth,
                         "steps": steps, "batch_size": batch_size, "lr": lr, "image_size": size, "seed": seed,
                         "in_channels": int(images.shape[1])}
        masks = None if objective != "segmentation" else torch.as_tensor(train_masks).long()
        self.classes = int(masks.max()) + 1 if masks is not None else int(images.shape[1])
        self.settings["classes"] = self.classes
        self.data_hash = array_hash(images, masks)
        key = content_hash({"data": self.data_hash, **self.settings})[:20]
        path = Path(cache_dir) / f"unet_encoder-{key}.pt" if cache_dir else None

        # The initial weights are a function of the seed alone (not of whatever the process drew before), and one
        # process trains while parallel runs of a sweep wait for it and then load the same file.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = _build(images.shape[1], self.classes, encoder_name, encoder_depth)
        self.train_seconds = 0.0
        with contextlib.ExitStack() as stack:
            if path is not None:
                stack.enter_context(file_lock(path))
                for name in (path.name, path.with_suffix(".json").name):  # left by a writer killed mid-way
                    remove_stale_temporaries(path.parent, name)
            if path is not None and path.is_file():
                self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
                self.cached = True
            else:
                with torch.random.fork_rng(devices=[]):  # training draws from its own seeded streams only
                    self._train(images, masks, device, progress)
                self.net.to("cpu")
                self.cached = False
                if path is not None:
                    blob = {"state_dict": self.net.state_dict(), "settings": self.settings, "data_hash": self.data_hash}
                    atomic_write(path, lambda fh: torch.save(blob, fh))
                    atomic_write(path.with_suffix(".json"),
                                 lambda fh: fh.write(json.dumps({**self.settings, "data_hash": self.data_hash,
                                                                 "train_seconds": self.train_seconds}).encode()))
        self.net.eval()
        self.model = self.net.encoder
        self.weights = (f"trained here on training split sha256={self.data_hash[:16]} "
                        f"({objective}, {steps} steps, seed={seed})")
        self.weights_sha256 = self.weights_digest()  # of the parameters themselves, not of the settings
        self.feature_dim = self.net.encoder.out_channels[-1]

    def _train(self, images, masks, device, progress):
        t0 = time.perf_counter()
        s = self.settings
        g = torch.Generator().manual_seed(s["seed"])
        torch.manual_seed(s["seed"])
        if images.shape[-1] != s["image_size"]:
            images = F.interpolate(images, size=(s["image_size"],) * 2, mode="bilinear", align_corners=False)
            if masks is not None:
                masks = F.interpolate(masks[:, None].float(), size=(s["image_size"],) * 2, mode="nearest")[:, 0].long()
        net = self.net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=s["lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s["steps"])
        for step in range(s["steps"]):
            idx = torch.randint(len(images), (min(s["batch_size"], len(images)),), generator=g)
            x = images[idx].to(device)
            if masks is not None:
                loss = F.cross_entropy(net(x), masks[idx].to(device))
            else:  # denoising autoencoder: Gaussian noise + 8x8 patches dropped
                noisy = x + 0.3 * torch.randn(x.shape, generator=g).to(device)
                cells = max(1, s["image_size"] // 8)
                keep = (torch.rand((len(x), 1, cells, cells), generator=g) > 0.3).float().to(device)
                noisy = noisy * F.interpolate(keep, size=x.shape[-2:], mode="nearest")
                loss = F.mse_loss(net(noisy), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress and step % 50 == 0:
                print(f"[unet_encoder] step {step}/{s['steps']} loss {loss.item():.4f}")
        self.final_loss = float(loss.item())
        self.train_seconds = time.perf_counter() - t0

    def _to(self, device):
        self.net.to(device).eval()

    def _forward(self, x):
        return self.net.encoder(x)[-1].mean(dim=(2, 3))

    def describe(self) -> dict:
        return {**super().describe(), "trained_on_sha256": self.data_hash, "training": self.settings}


@register_extractor("unet_encoder")
def _factory(**kwargs) -> UNetEncoder:
    return UNetEncoder(**kwargs)

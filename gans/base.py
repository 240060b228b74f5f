"""The one interface every GAN of the zoo offers to the training loop and to evaluation.

The run orchestrator (benchmark/train_loop.py) only ever calls: ``configure_optimizers``, ``train_step``,
``update_ema``, ``sample``, ``model_args`` and ``state_dict``; evaluation rebuilds a model with
:func:`build_from_args`. Keeping that surface small is what lets one training loop drive every model.

GANs that do not take a mask as input learn image + one-hot mask stacked as channels (gans/pairs.py), so their
"data" tensor has ``image_channels + num_mask_classes`` channels and every sample is an image-mask pair.
"""
from __future__ import annotations

import copy
import importlib
import inspect

import torch
import torch.nn as nn

from gans.pairs import split_pair, stack_pair

OPTIMIZERS = ("adam", "adamw", "rmsprop")


def make_optimizer(params, lr: float, betas: tuple[float, float], optimizer: str) -> torch.optim.Optimizer:
    """Adam/AdamW take ``betas``; RMSprop (the original WGAN's choice) ignores them."""
    params = [p for p in params if p.requires_grad]
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas))
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")


class GAN(nn.Module):
    """Base class. Subclasses build ``self.generator`` and ``self.discriminator``, call :meth:`_init_ema`, and
    implement :meth:`train_step` and :meth:`_generate`.

    The constructor arguments of the concrete class are captured automatically (see ``__new__``) so that
    :meth:`model_args` can rebuild the model from a checkpoint without pickling modules.
    """

    takes_masks = False  # True for mask-conditioned generators (SPADE): sample() then accepts masks

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        captured = dict(bound.arguments)
        captured.pop("self", None)
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                captured.update(captured.pop(name, {}))
        object.__setattr__(obj, "_ctor_args", captured)
        return obj

    def __init__(self, name: str, image_size: int, image_channels: int, num_mask_classes: int = 0,
                 num_classes: int = 0, conditional: bool = False, latent_dim: int = 128):
        super().__init__()
        if image_channels < 1:
            raise ValueError(f"image_channels must be >= 1, got {image_channels}")
        if num_mask_classes == 1:
            raise ValueError("num_mask_classes counts the background too: use 0 (no masks) or >= 2")
        if conditional and num_classes < 2:
            raise ValueError(f"GAN {name!r} is class-conditional but got num_classes={num_classes}: "
                             "it needs a dataset with class labels")
        self.name = name
        self.image_size = int(image_size)
        self.image_channels = int(image_channels)
        self.num_mask_classes = int(num_mask_classes)
        self.num_classes = int(num_classes) if conditional or num_classes else 0
        self.conditional = bool(self.num_classes)
        self.latent_dim = int(latent_dim)

    # --- construction helpers ----------------------------------------------------------------------------------
    @property
    def data_channels(self) -> int:
        """Channels of what the generator outputs and the discriminator sees (image + one-hot mask)."""
        return self.image_channels + self.num_mask_classes

    def _init_ema(self) -> None:
        """``g_ema``: a frozen copy of the generator, the one that is sampled by default."""
        self.g_ema = copy.deepcopy(self.generator).eval()
        self.g_ema.requires_grad_(False)

    def model_args(self) -> dict:
        """Everything needed to rebuild this model (with ``_target_``), as plain Python values."""
        cls = type(self)
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **copy.deepcopy(self._ctor_args)}

    # --- training ----------------------------------------------------------------------------------------------
    def configure_optimizers(self, lr_g: float, lr_d: float, betas: tuple[float, float],
                             optimizer: str = "adam") -> dict[str, torch.optim.Optimizer]:
        return {"g": make_optimizer(self.generator.parameters(), lr_g, betas, optimizer),
                "d": make_optimizer(self.discriminator.parameters(), lr_d, betas, optimizer)}

    def train_step(self, batch: dict, optimizers: dict, step: int) -> dict[str, float]:
        raise NotImplementedError

    def real_pairs(self, batch: dict) -> torch.Tensor:
        """The batch as the model's data tensor: image, plus the one-hot mask channels when the model has masks."""
        images = batch["images"]
        if images.shape[1] != self.image_channels or images.shape[-1] != self.image_size:
            raise ValueError(f"{self.name}: batch images are {tuple(images.shape)}, model expects "
                             f"{self.image_channels} channels at {self.image_size} px")
        if self.num_mask_classes:
            if batch.get("masks") is None:
                raise ValueError(f"{self.name} was built with num_mask_classes={self.num_mask_classes} "
                                 "but the batch has no 'masks'")
            return stack_pair(images, batch["masks"], self.num_mask_classes)
        return images

    def critic_updates(self, critic, real: torch.Tensor, make_fake, optimizer: torch.optim.Optimizer,
                       out: dict) -> None:
        """``loss.n_critic`` discriminator updates on one real batch, shared by the models that use the swappable
        losses: ``critic(x) -> logits`` sees the D view (DiffAugment when on) of real and of ``make_fake()`` (drawn
        without gradients); the regulariser (gradient penalty) sees the un-augmented pairs. Writes ``loss_d``
        (and ``gp``) into ``out``."""
        self.discriminator.requires_grad_(True)
        for _ in range(self.loss.n_critic):
            with torch.no_grad():
                fake = make_fake()
            loss_d = self.loss.d_loss(critic(self._d_view(real)), critic(self._d_view(fake)))
            reg = self.loss.regularizer(critic, real, fake)
            if reg is not None:
                out["gp"] = float(reg.detach())
                loss_d = loss_d + reg
            optimizer.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer.step()
            self.loss.after_d_step(self.discriminator)
        out["loss_d"] = float(loss_d.detach())

    def generator_update(self, loss_g: torch.Tensor, optimizer: torch.optim.Optimizer, out: dict) -> dict:
        """Apply the generator loss (D was frozen for it), unfreeze D, and record ``loss_g``."""
        optimizer.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer.step()
        self.discriminator.requires_grad_(True)
        out["loss_g"] = float(loss_g.detach())
        return out

    def _d_view(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of a batch (subclasses add DiffAugment)."""
        return x

    def batch_labels(self, batch: dict) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if batch.get("labels") is None:
            raise ValueError(f"{self.name} is class-conditional but the batch has no 'labels'")
        return batch["labels"]

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """g_ema <- decay * g_ema + (1 - decay) * generator; buffers (BN statistics, spectral-norm vectors,
        running averages) are copied."""
        for p_ema, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    # --- sampling ----------------------------------------------------------------------------------------------
    def _generate(self, net: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, masks: torch.Tensor | None,
                  noise_seeds: torch.Tensor) -> torch.Tensor:
        """Run ``net`` on one chunk; returns the model's data tensor (image [+ one-hot mask]) in [-1, 1].
        ``noise_seeds`` ([B] int64) seeds any per-sample noise beyond z, so results do not depend on chunking."""
        raise NotImplementedError

    def _sample_masks(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        """Masks to condition on when the caller gives none (mask-conditioned models override this)."""
        return None

    def _sample_labels(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), generator=gen)

    @torch.no_grad()
    def sample(self, n: int, seed: int, labels=None, masks=None, batch_size: int = 64, ema: bool = True) -> dict:
        """n samples as CPU tensors: images float32 [n,C,H,W] in [-1,1], masks int64 [n,H,W] when the model makes
        or uses masks, labels int64 [n] for conditional models. All randomness comes from a private generator
        seeded with ``seed`` and is drawn for all n up front, so the result does not depend on ``batch_size``."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.latent_dim, generator=gen)
        noise_seeds = torch.randint(0, 2 ** 62, (n,), generator=gen)
        if labels is None:
            labels = self._sample_labels(n, gen)
        elif not self.num_classes:
            raise ValueError(f"{self.name} is unconditional: it cannot take labels")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).cpu()
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape [{n}], got {tuple(labels.shape)}")
        if masks is not None and not self.takes_masks:
            raise ValueError(f"{self.name} does not take masks as input (it generates image-mask pairs itself)")
        if masks is None:
            masks = self._sample_masks(n, gen)
        if masks is not None:
            masks = torch.as_tensor(masks).long().cpu()
            if masks.shape != (n, self.image_size, self.image_size):
                raise ValueError(f"masks must have shape [{n}, {self.image_size}, {self.image_size}], "
                                 f"got {tuple(masks.shape)}")
        net = self.g_ema if ema else self.generator
        was_training = net.training
        net.eval()  # BatchNorm in eval mode: a sample must not depend on the other samples of its chunk
        device = next(self.parameters()).device
        images_out, masks_out = [], []
        try:
            for start in range(0, n, batch_size):
                sl = slice(start, min(n, start + batch_size))
                x = self._generate(net, z[sl].to(device), None if labels is None else labels[sl].to(device),
                                   None if masks is None else masks[sl].to(device), noise_seeds[sl])
                x = x.float().clamp(-1, 1).cpu()
                img, msk = split_pair(x, self.image_channels, self.num_mask_classes if x.shape[1] >
                                      self.image_channels else 0)
                images_out.append(img)
                if msk is not None:
                    masks_out.append(msk)
        finally:
            net.train(was_training)
        out = {"images": torch.cat(images_out) if images_out else torch.empty(0, self.image_channels,
                                                                                self.image_size, self.image_size)}
        if masks is not None:
            out["masks"] = masks
        elif masks_out:
            out["masks"] = torch.cat(masks_out).long()
        if labels is not None:
            out["labels"] = labels
        return out


def build_from_args(model_args: dict) -> GAN:
    """Rebuild a GAN from :meth:`GAN.model_args` (e.g. from a checkpoint); load its state dict afterwards."""
    args = dict(model_args)
    target = args.pop("_target_", None)
    if not target or "." not in target:
        raise ValueError(f"model_args has no usable '_target_' (got {target!r})")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model_args names {target!r}, which cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, GAN)):
        raise ValueError(f"{target!r} is not a gans.base.GAN subclass")
    return cls(**args)

"""The one interface every GAN of the zoo offers to the training loop and to evaluation.

The run orchestrator only ever calls: ``configure_optimizers``, ``train_step``, ``update_ema``, ``sample``,
``model_args`` and ``state_dict``; evaluation rebuilds a model with :func:`build_from_args`, which only builds
classes registered with :func:`register_gan` (a checkpoint cannot make it import or call anything else). Keeping
that surface small is what lets one training loop drive every model.

``train_step(batch, optimizers, step, amp)`` runs forward passes inside ``amp.autocast()`` and leaves backward passes
and optimiser steps to ``amp`` (:mod:`medsynbench.amp`: gradient scaling under ``16-mixed``, plain at full precision).

GANs that do not take a mask as input learn image + one-hot mask stacked as channels (gans/pairs.py), so their
"data" tensor has ``image_channels + num_mask_classes`` channels and every sample is an image-mask pair.
"""
from __future__ import annotations

import copy
import inspect

import torch
import torch.nn as nn

from medsynbench.gans.pairs import split_pair, stack_pair
from medsynbench.amp import FP32, Amp
from medsynbench.nn import make_optimizer

GAN_OPTIMIZERS = ("adam", "adamw", "rmsprop")

#: registered GAN classes by name; :func:`build_from_args` builds nothing else
GAN_REGISTRY: dict[str, type] = {}


def register_gan(name: str):
    """Class decorator: make a :class:`GAN` subclass buildable from checkpoints (by ``name`` or by its
    ``module.qualname`` ``_target_``)."""
    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, GAN)):
            raise TypeError(f"register_gan({name!r}) decorates GAN subclasses, not {cls!r}")
        if GAN_REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"GAN name {name!r} is already registered for {GAN_REGISTRY[name]!r}")
        GAN_REGISTRY[name] = cls
        return cls
    return decorate


def gan_target(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def draw_train_masks(train_masks: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` masks drawn uniformly with replacement from the real training masks ([N, H, W] int64), seeded: what a
    mask-conditioned GAN (SPADE) is sampled from at evaluation, as in the empirical study. The draw has its own
    generator (offset from ``seed``), so it does not change the latents ``sample(seed=seed)`` draws."""
    if train_masks is None or len(train_masks) == 0:
        raise ValueError("a mask-conditioned GAN samples from real training masks, but the training split has none")
    gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
    return torch.as_tensor(train_masks)[torch.randint(len(train_masks), (n,), generator=gen)].long().cpu()


class GAN(nn.Module):
    """Base class. Subclasses build ``self.generator`` and ``self.discriminator``, call :meth:`_init_ema`, and
    implement :meth:`train_step` and :meth:`_generate`.

    The constructor arguments of the concrete class are captured automatically (see ``__new__``) so that
    :meth:`model_args` can rebuild the model from a checkpoint without pickling modules.
    """

    takes_masks = False  # True for mask-conditioned generators (SPADE): sample() then accepts masks

    @property
    def mask_source(self) -> str | None:
        """Where the masks of this model's image-mask samples come from, for records: ``"real_train_masks"``
        (mask-conditioned: the caller passes real training masks, see :func:`draw_train_masks`), ``"generated"``
        (image and mask generated jointly), or None (no masks)."""
        if self.takes_masks:
            return "real_train_masks"
        return "generated" if self.num_mask_classes else None

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
        self._check_optimizer(optimizer)
        return {"g": make_optimizer(self.generator.parameters(), optimizer, lr_g, betas),
                "d": make_optimizer(self.discriminator.parameters(), optimizer, lr_d, betas)}

    @staticmethod
    def _check_optimizer(optimizer: str) -> None:
        if optimizer not in GAN_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {GAN_OPTIMIZERS}")

    def train_step(self, batch: dict, optimizers: dict, step: int, amp: Amp = FP32) -> dict[str, float]:
        """One training step (D and G updates); forward passes inside ``amp.autocast()``, backward passes and
        optimiser steps through ``amp``. Returns the losses as floats."""
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
                       out: dict, amp: Amp = FP32) -> None:
        """``loss.n_critic`` discriminator updates on one real batch, shared by the models that use the swappable
        losses: ``critic(x) -> logits`` sees the D view (DiffAugment when on) of real and of ``make_fake()`` (drawn
        without gradients); the regulariser (gradient penalty) sees the un-augmented pairs. Forward passes run in
        ``amp.autocast()``; backward and step through ``amp``. Writes ``loss_d`` (and ``gp``) into ``out``."""
        self.discriminator.requires_grad_(True)
        for _ in range(self.loss.n_critic):
            with torch.no_grad(), amp.autocast():
                fake = make_fake()
            with amp.autocast():
                loss_d = self.loss.d_loss(critic(self._d_view(real)), critic(self._d_view(fake)))
            reg = self.loss.regularizer(critic, real, fake, amp=amp)
            if reg is not None:
                out["gp"] = float(reg.detach())
                loss_d = loss_d + reg
            optimizer.zero_grad(set_to_none=True)
            amp.backward(loss_d)
            amp.step(optimizer)
            self.loss.after_d_step(self.discriminator)
        out["loss_d"] = float(loss_d.detach())

    def generator_update(self, loss_g: torch.Tensor, optimizer: torch.optim.Optimizer, out: dict,
                         amp: Amp = FP32) -> dict:
        """Apply the generator loss (D was frozen for it; computed in ``amp.autocast()``), unfreeze D, and record
        ``loss_g``."""
        optimizer.zero_grad(set_to_none=True)
        amp.backward(loss_g)
        amp.step(optimizer)
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


def registered_gans() -> dict[str, type]:
    """Name -> class of every buildable GAN (importing the zoo's modules registers them)."""
    import medsynbench.gans  # noqa: F401  (gans/__init__.py imports every model module)

    return dict(GAN_REGISTRY)


def resolve_gan_class(target: str) -> type:
    """The registered GAN class that ``target`` names (``module.qualname`` as in :meth:`GAN.model_args`, or a
    registry name). Nothing is imported or looked up by the given string itself."""
    registry = registered_gans()
    by_target = {gan_target(cls): cls for cls in registry.values()}
    cls = by_target.get(target) or registry.get(target)
    if cls is None:
        raise ValueError(f"model_args names _target_={target!r}, which is not a registered GAN class; only "
                         f"{sorted(by_target)} (or the names {sorted(registry)}) can be built from model_args "
                         "(register a new model with @gans.register_gan)")
    return cls


def build_from_args(model_args: dict) -> GAN:
    """Rebuild a registered GAN from :meth:`GAN.model_args` (e.g. from a checkpoint); load its state dict
    afterwards. Refuses (ValueError) any ``_target_`` that is not a registered GAN class."""
    if not isinstance(model_args, dict):
        raise ValueError(f"model_args must be a dict, got {type(model_args).__name__}")
    args = dict(model_args)
    target = args.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise ValueError(f"model_args has no usable '_target_' (got {target!r})")
    return resolve_gan_class(target)(**args)

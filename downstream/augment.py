"""Classic data augmentation for the ``real_augmented`` downstream scenario (torchvision.transforms.v2).

The empirical study's "augmented original data" row (rotations, shifts, flips) and the dermatology study's classifier
augmentation (random rotation, horizontal and vertical flips) train the task model on the real training split with
augmentation drawn online, per batch and per image. Image and mask go through one v2 pipeline together, wrapped as
``tv_tensors.Image`` / ``tv_tensors.Mask``: geometric transforms move both with the same parameters, masks are
resampled with nearest interpolation (they stay index masks) and photometric transforms (brightness, contrast) touch
the image only.

Each batch draws one seed from the training loop's seeded generator and runs the transforms under a forked,
re-seeded torch RNG: the same run seed gives the same augmented batches (and weights on CPU), and the caller's global
RNG is left as it was.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from medsynbench.downstream.config import AugmentSettings


def build_transform(s: AugmentSettings) -> v2.Transform:
    """The v2 pipeline for one (image in [0, 1], optional mask) sample. Empty areas after rotation or shift are filled
    with 0: black image pixels and background mask pixels."""
    steps: list[v2.Transform] = []
    if s.hflip:
        steps.append(v2.RandomHorizontalFlip(p=s.hflip))
    if s.vflip:
        steps.append(v2.RandomVerticalFlip(p=s.vflip))
    if s.degrees or s.translate or tuple(s.scale) != (1.0, 1.0):
        steps.append(v2.RandomAffine(degrees=s.degrees, translate=(s.translate, s.translate) if s.translate else None,
                                     scale=tuple(s.scale), interpolation=v2.InterpolationMode.BILINEAR,
                                     fill={tv_tensors.Image: 0.0, tv_tensors.Mask: 0}))
    if s.elastic_alpha and s.elastic_p:
        # masks are resampled with nearest interpolation by v2 itself (tv_tensors.Mask)
        steps.append(v2.RandomApply([v2.ElasticTransform(alpha=s.elastic_alpha, sigma=s.elastic_sigma,
                                                         interpolation=v2.InterpolationMode.BILINEAR,
                                                         fill={tv_tensors.Image: 0.0, tv_tensors.Mask: 0})],
                                    p=s.elastic_p))
    if s.brightness or s.contrast:
        steps.append(v2.ColorJitter(brightness=s.brightness or None, contrast=s.contrast or None))
    return v2.Compose(steps)


#: ``downstream.augment_flip``: the random horizontal + vertical flips every scenario but real_augmented trains with
FLIPS_ONLY = AugmentSettings(hflip=0.5, vflip=0.5, degrees=0.0, translate=0.0, scale=[1.0, 1.0], brightness=0.0,
                             contrast=0.0, elastic_alpha=0.0)
NO_AUGMENTATION = AugmentSettings(hflip=0.0, vflip=0.0, degrees=0.0, translate=0.0, scale=[1.0, 1.0], brightness=0.0,
                                  contrast=0.0, elastic_alpha=0.0)


class Augmenter:
    """``augmenter(images, masks_or_None, generator) -> (images, masks_or_None)`` for a batch in the project
    convention (float images [N, C, H, W] in [-1, 1], index masks [N, H, W]); a different draw per image.
    ``normalise`` (e.g. ImageNet normalisation for pretrained weights) is applied to the augmented images."""

    def __init__(self, settings: AugmentSettings | dict | None = None, normalise=None):
        if settings is None:
            settings = AugmentSettings()
        elif isinstance(settings, dict):
            settings = AugmentSettings(**settings)
        self.settings = settings
        self.transform = build_transform(settings)
        self.identity = not self.transform.transforms
        self.normalise = normalise

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator):
        images = images.float()
        if self.identity:  # no augmentation (augment_flip: false): normalisation only, no random draw
            return (self.normalise(images) if self.normalise is not None else images), masks
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        if images.shape[1] not in (1, 3) and (self.settings.brightness or self.settings.contrast):
            raise ValueError(f"real_augmented: brightness/contrast need 1- or 3-channel images, got {images.shape[1]} "
                             f"channels; set downstream.augment.brightness=0 and downstream.augment.contrast=0")
        out_images, out_masks = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(len(images)):
                image = tv_tensors.Image(((images[i].float() + 1) / 2).clamp(0, 1))
                if masks is None:
                    out_images.append(self.transform(image))
                    continue
                image, mask = self.transform(image, tv_tensors.Mask(masks[i]))
                out_images.append(image)
                out_masks.append(mask)
        images_out = torch.stack([x.as_subclass(torch.Tensor) for x in out_images]) * 2 - 1
        masks_out = None if masks is None else torch.stack([m.as_subclass(torch.Tensor) for m in out_masks])
        images_out = images_out.to(images.dtype)
        return (self.normalise(images_out) if self.normalise is not None else images_out), masks_out

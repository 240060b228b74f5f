"""The GAN zoo: every model implements :class:`gans.base.GAN` and is registered by name (:func:`register_gan`);
checkpoints rebuild through :func:`build_from_args`, which only builds registered classes."""
from medsynbench.gans.base import GAN, GAN_REGISTRY, build_from_args, draw_train_masks, register_gan, registered_gans
from medsynbench.gans.dcgan import DCGAN
from medsynbench.gans.spade import SPADE
from medsynbench.gans.stylegan2 import StyleGAN2

__all__ = ["GAN", "GAN_REGISTRY", "build_from_args", "draw_train_masks", "register_gan", "registered_gans",
           "DCGAN", "SPADE", "StyleGAN2"]

"""The GAN zoo: every model implements :class:`gans.base.GAN`; checkpoints rebuild through :func:`build_from_args`."""
from gans.base import GAN, build_from_args

__all__ = ["GAN", "build_from_args"]

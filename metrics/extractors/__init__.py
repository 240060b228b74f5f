"""Registry of named feature extractors: ``get_extractor(name, **options)``.

Names: ``inception_fid``, ``random_cnn``, ``unet_encoder``, ``torchvision:<arch>``, ``timm:<model>``.
The orchestrator passes the same context (train_set, cache_dir, device, seed) to every extractor; each one takes
what it needs and ignores the rest.
"""
from __future__ import annotations

from typing import Callable

from medsynbench.metrics.extractors.base import FeatureExtractor, Preprocess

_EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {}
_PREFIXES = ("torchvision", "timm")
CONTEXT_KEYS = ("train_set", "cache_dir", "device", "seed")  # what the orchestrator passes to every extractor


def register_extractor(name: str):
    def wrap(factory):
        if name in _EXTRACTORS:
            raise ValueError(f"extractor {name!r} registered twice")
        _EXTRACTORS[name] = factory
        return factory
    return wrap


def list_extractors() -> list[str]:
    _load()
    return sorted(_EXTRACTORS) + [f"{p}:<name>" for p in _PREFIXES]


def extractor_factory(name: str) -> Callable[..., FeatureExtractor]:
    """The registered factory of ``name`` (not the ``torchvision:``/``timm:`` hub forms); KeyError when unknown."""
    _load()
    if name not in _EXTRACTORS:
        raise KeyError(f"unknown extractor {name!r}; valid names: {', '.join(list_extractors())}")
    return _EXTRACTORS[name]


def get_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build the extractor called ``name``; an unknown name raises a KeyError listing the valid ones."""
    _load()
    if ":" in name:
        prefix, model = name.split(":", 1)
        if prefix not in _PREFIXES or not model:
            raise KeyError(f"unknown extractor {name!r}; valid names: {', '.join(list_extractors())}")
        from medsynbench.metrics.extractors.hub import HubExtractor
        return HubExtractor(prefix, model, **_without_context(kwargs, keep=("seed",)))
    return extractor_factory(name)(**kwargs)


def _without_context(kwargs: dict, keep=()) -> dict:
    return {k: v for k, v in kwargs.items() if k not in CONTEXT_KEYS or k in keep}


def _load():
    from medsynbench.metrics.extractors import inception, random_cnn, unet_encoder  # noqa: F401  (register themselves)


__all__ = ["CONTEXT_KEYS", "FeatureExtractor", "Preprocess", "extractor_factory", "get_extractor", "list_extractors",
           "register_extractor"]

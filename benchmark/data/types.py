"""Re-export of the data containers, which live in :mod:`medsynbench.types` (the layer every package may import)."""
from medsynbench.types import DatasetBundle, ImageSet

__all__ = ["DatasetBundle", "ImageSet"]

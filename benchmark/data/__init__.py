"""Data layer: ``load_dataset(dataset_cfg, data_cfg) -> DatasetBundle`` and ``DataError``.

Also registers the ``msb_root`` OmegaConf resolver (repo root) used by ``conf/dataset/*.yaml`` so that dataset
configs resolve even when the data layer is used without the CLI.
"""
from pathlib import Path

from omegaconf import OmegaConf

from medsynbench.benchmark.data.config import DataConfig, DatasetConfig
from medsynbench.benchmark.data.errors import DataError
from medsynbench.benchmark.data.loader import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
if not OmegaConf.has_resolver("msb_root"):
    OmegaConf.register_new_resolver("msb_root", lambda: str(REPO_ROOT))

__all__ = ["load_dataset", "DataError", "DatasetConfig", "DataConfig", "REPO_ROOT"]

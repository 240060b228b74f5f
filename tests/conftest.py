"""Shared fixtures: compose the real Hydra config with tiny overrides (CPU, 32 px, a few steps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from medsynbench.benchmark.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
SHARED = REPO.parent / "shared"

torch.set_num_threads(min(2, torch.get_num_threads()))

# A run small enough for a unit test: embedded data at 32 px, 4 steps, tiny evaluation.
SMOKE = ["train=smoke", "data.image_size=32", "device=cpu", "metrics=smoke", "downstream=smoke", "gan.g_filters=16",
         "gan.d_filters=16"]


def compose_config(overrides: list[str], config_name: str = "config"):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def smoke_cfg(tmp_path):
    def make(*overrides: str, results: Path | None = None):
        return compose_config([*SMOKE, f"paths.results_dir={results or tmp_path / 'results'}", *overrides])
    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run faster on one thread, and the CPU may be shared with other test processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data():
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real datasets not available: {path} is absent (only in the project's build environment)")
    return path


def write_dicom(path: Path, arr: np.ndarray, bits: int, photometric: str = "MONOCHROME2") -> None:
    """A one-frame secondary-capture DICOM file of ``arr`` (pydicom), as a scanner export would store it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.set_pixel_data(arr, photometric, bits)
    ds.save_as(path, enforce_file_format=True)

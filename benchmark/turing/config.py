"""``medsynbench turing <action>``: the typed schema of ``conf/turing.yaml`` (registered as ``turing_schema``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from medsynbench.benchmark.config import PathsConfig

ACTIONS = ("create", "serve", "results", "add-rater", "progress")


@dataclass
class TuringConfig:
    action: str = MISSING                    # create | serve | results | add-rater | progress
    study_dir: str = "${paths.results_dir}/turing/default"
    paths: PathsConfig = field(default_factory=PathsConfig)
    # --- create: where the images come from ----------------------------------------------------------------------
    runs: list[str] = field(default_factory=list)     # run directories or training ids (looked up in the store)
    filter: dict[str, Any] = field(default_factory=dict)  # or: every completed run of the store matching these keys
    package: Optional[str] = None            # a model package (medsynbench.benchmark.zoo.load_generator)
    synthetic_folder: Optional[str] = None   # a folder of synthetic images (any tool)
    real_folder: Optional[str] = None        # real images from a folder (default: the runs' dataset, real_split)
    real_split: str = "test"                 # test | train: which split of the runs' dataset gives the real images
    # --- create: selection and encoding --------------------------------------------------------------------------
    n_images: int = 100                      # images shown to every rater
    real_fraction: float = 0.5               # share of real images (0.5 = balanced)
    stratify: Optional[str] = None           # null | class | model: equal counts per class (both sides) or per model
    seed: int = 0                            # selection, sampling latents, per-rater image order
    image_size: Optional[int] = None         # served size in px (null = the synthetic images' size)
    resample: str = "lanczos"                # resize filter, the same for real and synthetic: lanczos|bicubic|bilinear|nearest
    display_size: int = 512                  # CSS size of the image on the page
    title: str = "Visual Turing test"
    instructions: str = ("Is this image real (acquired from a patient) or synthetic (made by a generative model)? "
                         "Choose an answer and your confidence.")
    show_score: bool = False                 # show a rater their accuracy once every image is answered
    require_confidence: bool = True          # an image counts as done only with a confidence
    confidence_levels: int = 5               # confidence scale 1..N
    raters: list[str] = field(default_factory=list)  # create these raters too (links printed once)
    links_file: Optional[str] = None         # also write the printed links there (mode 600)
    overwrite: bool = False                  # replace an existing study (its answers are lost)
    device: str = "auto"                     # sampling device: auto (CUDA > MPS > CPU) | cpu | cuda ...
    batch_size: int = 64                     # sampling batch
    # --- add-rater -------------------------------------------------------------------------------------------------
    rater: Optional[str] = None              # name of the rater to add
    # --- serve -----------------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: Optional[str] = None           # how raters reach the server (null = http://<host>:<port>)
    # --- results ---------------------------------------------------------------------------------------------------
    out_dir: Optional[str] = None            # null = <study_dir>/results
    ci: float = 0.95                         # level of the exact (Clopper-Pearson) intervals
    format: str = "table"                    # progress: table | json


def register_turing_config() -> None:
    ConfigStore.instance().store(name="turing_schema", node=TuringConfig)

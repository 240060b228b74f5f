"""Structured-config schemas, registered in Hydra's ConfigStore.

The top-level schema types the ``dataset``, ``data`` and ``train`` groups, so a misspelt key in a YAML file or on the
command line fails at compose time with Hydra's "Key '...' not in ..." message. The ``gan``, ``metrics`` and
``downstream`` groups are validated by the constructors they are instantiated into (an unknown argument raises).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from medsynbench.benchmark.data.config import DataConfig, DatasetConfig
from medsynbench.benchmark.federated.config import FederatedConfig
from medsynbench.benchmark.utils import REPO_ROOT


@dataclass
class TrainConfig:
    steps: int = 1000                 # generator iterations
    batch_size: int = 32
    optimizer: str = "adam"           # adam | adamw | rmsprop
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    ema_decay: float = 0.999          # EMA of generator weights (g_ema is what gets sampled)
    ema_start: int = 0                # steps before EMA starts (g_ema copies the generator until then)
    checkpoint_every: int = 250       # a checkpoint is also always written at the last step
    keep_checkpoints: bool = True     # keep every snapshot (for metric-over-training curves), else only the latest
    sample_every: int = 250           # sample grid (fixed latents) every N steps
    sample_grid: int = 36
    log_every: int = 10
    progress: bool = True             # tqdm progress bar with losses
    stop_after: Optional[int] = None  # stop (as if killed) after this many steps; used to test resume


@dataclass
class PathsConfig:
    results_dir: str = "results"
    runs_dir: str = "${paths.results_dir}/runs"
    store_dir: str = "${paths.results_dir}/store"
    cache_dir: str = "${paths.results_dir}/cache"
    leaderboard_dir: str = "${paths.results_dir}/leaderboards"


@dataclass
class ObjectiveConfig:
    """What ``medsynbench train`` returns to a sweeper (Optuna): the value of one metric of the run's record. In no
    run id (``objective`` is a volatile key): choosing an objective never retrains or re-evaluates a run."""

    metric: Optional[str] = None      # e.g. kid_unet, fd_unet, dice_unet@synthetic (downstream: <metric>@<train_on>)
    direction: str = "auto"           # auto | minimize | maximize; must agree with the record's higher_is_better


@dataclass
class RunConfig:
    dataset: DatasetConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    gan: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: Any = field(default_factory=dict)
    downstream: Any = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "default"  # set by experiment/*.yaml; recorded with every result
    seed: int = 0
    device: str = "auto"              # auto (CUDA > MPS > CPU) | cpu | cuda | cuda:1 ...
    precision: str = "32"             # 32 | bf16-mixed | 16-mixed
    num_threads: Optional[int] = None # CPU threads for torch (null = torch's default). Set 1 when running several
                                      # jobs per machine (hydra/launcher=joblib): oversubscribed threads crawl
    evaluate: bool = True             # after training: sample, metrics, downstream, store record
    n_samples: Optional[int] = None   # synthetic images for the metrics; null = max(test split, feature dim + 1)
    evaluate_step: Optional[int] = None  # checkpoint step to evaluate (null = the last); needs that snapshot kept
    retry_failed: bool = False        # a relaunch skips runs recorded as failed unless true (in no id)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # the value a sweeper optimises
    federated: FederatedConfig = field(default_factory=FederatedConfig)  # conf/federated/ (none = central training)


@dataclass
class EvaluateConfig:
    run_dir: str = MISSING
    step: Optional[int] = None        # checkpoint step to evaluate (null = the latest valid checkpoint)
    device: str = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    overrides: Any = field(default_factory=dict)  # e.g. {metrics: {...}} to re-evaluate with other metric settings


@dataclass
class EvaluateFolderConfig:
    folder: str = MISSING
    name: Optional[str] = None
    limit: Optional[int] = None
    dataset: DatasetConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    metrics: Any = field(default_factory=dict)
    downstream: Any = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    # runtime keys, as for train (in no id, recorded with the result): where and how the evaluation runs
    device: str = "auto"              # auto (CUDA > MPS > CPU) | cpu | cuda | cuda:1 ...
    num_threads: Optional[int] = None # CPU threads for torch (null = the job's CPUs, as for train)
    progress: bool = True             # progress bars (reading the folder, feature extraction), as train.progress


@dataclass
class MetricsConfig:
    """Keys of the ``metrics`` group (``Any`` in the run schema so that extractor entries and option dicts stay
    free-form; benchmark/validate.py checks those against the extractors and metric functions themselves)."""

    seed: int = 0                      # KID subsets, FD_rr halves, bootstrap resamples
    batch_size: int = 64               # sampling and feature-extraction batch
    extractors: list[Any] = field(default_factory=list)    # [{name: <extractor>, <its options>, metrics: [...]}]
    feature_metrics: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of compute_feature_metrics
    image_metrics: list[str] = field(default_factory=list)
    image_options: dict[str, Any] = field(default_factory=dict)
    generator_metrics: list[str] = field(default_factory=list)
    generator_options: dict[str, Any] = field(default_factory=dict)


class CIMethod(Enum):
    """Confidence interval of a leaderboard's mean over seeds (benchmark/leaderboard.py)."""
    t = "t"
    bootstrap = "bootstrap"


@dataclass
class LeaderboardConfig:
    metric: Any = MISSING                    # a name or a list [kid_unet,fd_unet,...]; ranked by the first
    group_by: Optional[list[str]] = None     # null = every config key that differs (seeds only are averaged)
    filter: dict[str, Any] = field(default_factory=dict)  # +filter.dataset.name=kvasir +filter.gan.name=[a,b]
    include_failed: bool = False             # also diverged/failed runs (or filter.status=...)
    ci: float = 0.95                         # confidence level of the interval over seeds
    ci_method: CIMethod = CIMethod.t         # t (Student-t) | bootstrap (percentile, over the per-seed values)
    n_boot: int = 2000                       # bootstrap resamples (ci_method=bootstrap)
    boot_seed: int = 0                       # seed of the bootstrap's random generator (the same for every row)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ReportConfig:
    """``medsynbench report``: the four studies' tables and figures from the results store (benchmark/report.py)."""

    out_dir: str = "${paths.results_dir}/reports/default"
    filter: dict[str, Any] = field(default_factory=dict)  # +filter.experiment_name=x +filter.dataset.name=kvasir
    sweep_dir: Optional[str] = None          # only the records of one Hydra multirun's jobs (a directory | latest)
    sections: Optional[list[str]] = None     # null = every section (those without data are listed with notes)
    fd_metric: Optional[str] = None          # null = fid_inception if stored, else the most frequent fd_*
    downstream_metric: Optional[str] = None  # <metric>@<train_on> of the FD-vs-downstream scatter
    include_failed: bool = False
    ci: float = 0.95                         # Student-t intervals over seeds; bootstrap CI of Spearman's rho
    n_boot: int = 2000
    seed: int = 0
    title: str = "medsynbench report"
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class StatusConfig:
    sweep_dir: Optional[str] = None          # a Hydra multirun directory (holds multirun.yaml), or "latest"
    experiment_name: Optional[str] = None    # or: the records of one experiment (pending runs unknown)
    format: str = "table"                    # table | json
    heartbeat_timeout_s: float = 120.0       # a run whose heartbeat is younger than this counts as running
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class DatasetCheckConfig:
    """``medsynbench dataset-check dataset=<name>``: the dataset and data groups composed as for ``train``."""

    dataset: DatasetConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    format: str = "text"                     # text | json
    imbalance_ratio: float = 4.0             # warn when the largest class of a split is this many times the smallest


def register_configs() -> None:
    if not OmegaConf.has_resolver("msb_root"):
        OmegaConf.register_new_resolver("msb_root", lambda: str(REPO_ROOT))
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="evaluate_folder_schema", node=EvaluateFolderConfig)
    cs.store(name="leaderboard_schema", node=LeaderboardConfig)
    cs.store(name="status_schema", node=StatusConfig)
    cs.store(name="report_schema", node=ReportConfig)
    cs.store(name="dataset_check_schema", node=DatasetCheckConfig)
    from medsynbench.benchmark.latent import register_latent_configs  # project / sefa schemas (benchmark/latent.py)

    register_latent_configs()

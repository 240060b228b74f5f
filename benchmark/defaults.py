"""Defaults that follow the data: the downstream task chosen from ``dataset.task``, sample counts derived from the
test split, the feature dimensions and the downstream settings, and the checks that a config fits its data.

- ``downstream: auto`` (the default of ``conf/config.yaml``) becomes the option that fits ``dataset.task``
  (:data:`AUTO_DOWNSTREAM`: classification -> ``efficientnet_cls``, segmentation -> ``unet_seg``, anything else ->
  ``none``) before the run starts. The run's ``config.yaml``, its record and its evaluation id hold the resolved
  settings, so ``auto`` and the explicit choice of the same option are the same run.
- ``n_samples: null``: the synthetic set scored by the metrics has max(real test images, largest feature dimension + 1)
  images (:func:`metric_sample_count`), so that the synthetic side of a Fréchet distance has a full-rank covariance.
- The synthetic set of the downstream tasks is sized by the downstream settings alone
  (:func:`medsynbench.downstream.runner.synthetic_needed`):
  ``synthetic_n`` images for ``train_on=synthetic`` (null = as many as the real training images), ``mix_n`` or
  ``mix_ratio`` × real training images for ``real+synthetic``.
"""
from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

AUTO = "auto"
AUTO_DOWNSTREAM = {"segmentation": "unet_seg", "classification": "efficientnet_cls"}  # others: "none"
# n_samples: null in the evaluation id (the rule, so that a change of the rule is a new evaluation)
N_SAMPLES_RULE = "auto: max(n_test, max feature_dim + 1)"
# how the downstream tasks' synthetic sets are sized (part of the evaluation id of a run with a downstream task)
DOWNSTREAM_SIZING_RULE = "synthetic_n (null: n_real_train) / mix_n or mix_ratio * n_real_train, sampled for downstream"


def downstream_option(dataset_task: str | None) -> str:
    """The ``downstream`` option that fits a dataset's ``task``."""
    return AUTO_DOWNSTREAM.get(str(dataset_task), "none")


def _config_dirs() -> list[Path]:
    """Where Hydra looks for config group options: the running app's file sources (``--config-dir`` first), else the
    bundled tree."""
    from hydra.core.hydra_config import HydraConfig

    from medsynbench import config_dir

    dirs: list[Path] = []
    if HydraConfig.initialized():
        dirs = [Path(s.path) for s in HydraConfig.get().runtime.config_sources if s.schema == "file"]
    return [*dirs, config_dir()]


def load_option(group: str, option: str) -> DictConfig:
    """A config group option as Hydra composes it: its file from the first config source that has it, with the
    same-group options of its defaults list merged first."""
    path = next((d / group / f"{option}.yaml" for d in _config_dirs() if (d / group / f"{option}.yaml").is_file()),
                None)
    if path is None:
        raise FileNotFoundError(f"no config {group}/{option}.yaml in {', '.join(map(str, _config_dirs()))}")
    node = OmegaConf.load(path)
    parts = []
    defaults = node.pop("defaults", None) or []
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    for entry in defaults:  # same-group options (e.g. smoke.yaml: [unet_seg, _self_])
        if entry == "_self_":
            parts.append(node)
        elif isinstance(entry, str) and not entry.startswith(("/", "optional ", "override ")):
            parts.append(load_option(group, entry))
    return OmegaConf.merge(*parts)


def is_auto(downstream) -> bool:
    return isinstance(downstream, (dict, DictConfig)) and downstream.get("task") == AUTO


def resolved_downstream(cfg) -> tuple[DictConfig | None, str | None]:
    """(settings of the option that ``downstream: auto`` stands for, its option name); (None, None) when the config
    chose a task itself. Keys set in the ``auto`` node (not null) override the option's values."""
    node = cfg.get("downstream")
    if not is_auto(node):
        return None, None
    option = downstream_option(cfg.dataset.get("task"))
    chosen = load_option("downstream", option)
    given = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "task" and v is not None}
    if "epochs" in given and "steps" not in given and "steps" in chosen:
        given["steps"] = None  # epochs set on auto: the option's step count gives way
    return OmegaConf.merge(chosen, given), option


def resolve_run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``downstream: auto`` replaced by the option that fits the dataset (a copy; ``cfg`` itself is left
    as it is). A config without ``auto`` is returned unchanged."""
    resolved, option = resolved_downstream(cfg)
    if resolved is None:
        return cfg
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.downstream = resolved
    return out


# --- sample counts -------------------------------------------------------------------------------------------------
def metric_sample_count(n_samples: int | None, n_test: int, feature_dims: list[int]) -> tuple[int, str]:
    """(synthetic images the metrics score, how that number was chosen)."""
    if n_samples is not None:
        return int(n_samples), "n_samples"
    need = max(feature_dims, default=0) + 1 if feature_dims else 0
    if need > n_test:
        return need, f"n_samples=null: feature dimension {need - 1} + 1 (> {n_test} real test images)"
    return n_test, "n_samples=null: the real test split's size"


# --- does the config fit the loaded data? --------------------------------------------------------------------------
def check_data_fits(cfg, bundle) -> None:
    """Raise :class:`~medsynbench.benchmark.validate.ConfigError` when the loaded data cannot serve the config: a
    class-conditional GAN without class labels, a downstream task without its targets. Called right after the data
    is loaded, before any model is built."""
    from medsynbench.benchmark.validate import ConfigError

    name = cfg.dataset.name
    problems = []
    gan = cfg.get("gan") or {}
    labelled = bundle.train.labels is not None and (bundle.num_classes or 0) >= 2
    if gan.get("conditional", False) and not labelled:
        problems.append(
            f"gan={gan.get('name')} is class-conditional (gan.conditional=true) but dataset '{name}' has no class "
            f"labels in its training split{' (one class only)' if bundle.train.labels is not None else ''}: choose an "
            "unconditional GAN (e.g. gan=dcgan, gan=stylegan2) or give the dataset labels (dataset.label_column with "
            "dataset.index_csv)")
    task = (cfg.get("downstream") or {}).get("task", "none")
    if cfg.get("evaluate", True) and task == "segmentation" and (bundle.train.masks is None or bundle.test.masks is None):
        problems.append(f"downstream task segmentation needs masks, but dataset '{name}' has none "
                        f"(dataset.masks_dir={cfg.dataset.get('masks_dir')}): use downstream=auto (the default, "
                        "chosen from dataset.task), downstream=efficientnet_cls or downstream=none")
    if cfg.get("evaluate", True) and task == "classification" and (
            bundle.train.labels is None or bundle.test.labels is None or (bundle.num_classes or 0) < 2):
        problems.append(f"downstream task classification needs class labels in the training and test splits, but "
                        f"dataset '{name}' has none: use downstream=auto (the default, chosen from dataset.task), "
                        "downstream=unet_seg (with masks) or downstream=none")
    if problems:
        raise ConfigError(f"the config does not fit the data of dataset '{name}' (found when loading it, before "
                          "training):\n" + "\n".join(f"- {p}" for p in problems))

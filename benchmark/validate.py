"""Check a composed config for unknown keys before anything is loaded or trained.

Hydra's structured schemas (benchmark/config.py) catch a misspelt key in a YAML file or in a plain override, but
not one *added* with ``+`` (``+data.imag_size=32`` adds the key even to a typed node), and the ``gan``,
``metrics`` and ``downstream`` groups are free-form (``Any``) because their keys depend on the chosen model,
extractor, metric or task. :func:`validate_run_config` checks every group of the composed config against its real
schema and raises one :class:`ConfigError` listing every problem:

- ``dataset``, ``data``, ``train``, ``paths`` and the top-level keys: the dataclass schemas (``RunConfig`` ...);
- ``gan``: the constructor parameters of ``gan._target_`` (the keys the run derives from the dataset excluded);
- ``metrics``: ``MetricsConfig``; registered metric names of the right kind; each extractor entry against the
  parameters of its extractor class; ``options`` against ``compute_feature_metrics``; ``image_options`` and
  ``generator_options`` against the parameters of the registered image / generator metric functions;
- ``downstream``: the task's settings dataclass (``downstream.config``), then its value checks.

Each problem names the group, the full dotted key, the closest valid key, the valid keys, and where the key came
from: the YAML file of the chosen group option (found through Hydra's config sources, ``--config-dir`` included)
and/or the command-line override. Outside a Hydra app (``compose`` without ``return_hydra_config``) it names the group.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import os
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medsynbench.benchmark.config import EvaluateFolderConfig, MetricsConfig, RunConfig

# Constructor arguments of a GAN that the training loop derives from the dataset (benchmark/train_loop.build_gan);
# a value in the config would be silently replaced, so setting one is an error.
GAN_FROM_DATASET = ("image_size", "image_channels", "num_mask_classes", "num_classes")
# Arguments that benchmark/evaluate.py passes itself (a config value would clash: "got multiple values").
FEATURE_METRIC_ARGS = ("real_feats", "fake_feats", "names", "extractor", "seed")
IMAGE_METRIC_ARGS = ("train_images", "seed")
GENERATOR_METRIC_ARGS = ("gan", "device")
EXTRACTOR_ENTRY_KEYS = ("name", "metrics")  # read by evaluate.py itself, not passed to the extractor
# Generator metrics whose function forwards **options to another function (whose parameters are then valid too).
_FORWARDS = {"ppl": ("medsynbench.metrics.ppl", "perceptual_path_length", ("gan", "distance", "device"))}
_ABSENT = object()


class ConfigError(ValueError):
    """The composed configuration has unknown keys or names; raised before any data loading or training."""


def validate_run_config(cfg: DictConfig, hydra_cfg: Any = None) -> None:
    """Raise :class:`ConfigError` for any unknown key of a ``medsynbench train`` config (``conf/config.yaml``)."""
    _Validator(cfg, RunConfig, hydra_cfg).run()


def validate_evaluate_folder_config(cfg: DictConfig, hydra_cfg: Any = None) -> None:
    """The same checks for a ``medsynbench evaluate-folder`` config (``conf/evaluate_folder.yaml``)."""
    _Validator(cfg, EvaluateFolderConfig, hydra_cfg).run()


# --- signatures ---------------------------------------------------------------------------------------------------
def _params(fn, skip: Iterable[str] = (), skip_first: int = 0) -> tuple[list[str], bool]:
    """Named keyword-capable parameters of ``fn`` and whether it forwards ``**kwargs`` (a ``**_`` sink that
    swallows unused context does not count)."""
    params = list(inspect.signature(fn).parameters.values())[skip_first:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]
    forwards = any(p.kind is p.VAR_KEYWORD and not p.name.startswith("_") for p in params)
    return names, forwards


def gan_keys(target: str) -> tuple[list[str], bool]:
    """Constructor parameters of a GAN class (``self`` excluded) and whether it takes ``**kwargs``."""
    import hydra.utils

    return _params(hydra.utils.get_class(target).__init__, skip=("self",))


def extractor_keys(name: str) -> list[str] | None:
    """Options an extractor entry may set: the parameters of its extractor class (found through the factory's return
    annotation when the factory takes ``**kwargs``), less the context the orchestrator passes itself. ``None``: the
    extractor forwards arbitrary options, so they cannot be checked here."""
    from medsynbench.metrics.extractors import CONTEXT_KEYS, extractor_factory

    if ":" in name:  # torchvision:<arch> / timm:<model>: HubExtractor(library, model, **options); seed is passed
        from medsynbench.metrics.extractors.hub import HubExtractor
        names, forwards = _params(HubExtractor.__init__, skip=("self", "library", "model_name", *CONTEXT_KEYS))
        return None if forwards else names
    factory = extractor_factory(name)
    names, forwards = _params(factory)
    if forwards:
        try:
            target = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001  (an unresolvable annotation: nothing to inspect)
            target = None
        if not isinstance(target, type):
            return None
        names, forwards = _params(target.__init__, skip=("self",))
    return None if forwards else [n for n in names if n not in CONTEXT_KEYS]


def extractor_names() -> list[str]:
    from medsynbench.metrics.extractors import list_extractors

    return list_extractors()


def metric_names(kind: str) -> list[str]:
    import medsynbench.metrics  # noqa: F401  (registers every metric)
    from medsynbench.metrics.registry import list_metrics

    return list_metrics(kind) + (["prdc"] if kind == "feature" else [])


def metric_option_keys(kind: str) -> list[str] | None:
    """Keys of ``options`` / ``image_options`` / ``generator_options``: the keyword arguments that the call in
    benchmark/evaluate.py routes to some registered metric of that kind (``None``: one forwards anything)."""
    import importlib

    import medsynbench.metrics  # noqa: F401
    from medsynbench.metrics.compute import compute_feature_metrics
    from medsynbench.metrics.registry import get_metric, list_metrics

    if kind == "feature":  # every option is an argument of compute_feature_metrics, which routes them
        return _params(compute_feature_metrics, skip=FEATURE_METRIC_ARGS)[0]
    keys: list[str] = []
    for name in list_metrics(kind):
        fn = get_metric(name).fn
        if kind == "image":
            names, forwards = _params(fn, skip=IMAGE_METRIC_ARGS, skip_first=2)
        else:
            names, forwards = _params(fn, skip=GENERATOR_METRIC_ARGS)
            if forwards and name in _FORWARDS:
                module, attr, skip = _FORWARDS[name]
                more, forwards = _params(getattr(importlib.import_module(module), attr), skip=skip)
                names += more
        if forwards:
            return None
        keys += [n for n in names if n not in keys]
    return keys


# --- where a key came from ------------------------------------------------------------------------------------------
def _display(path: Path) -> str:
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


class _Origin:
    """Finds the file(s) and the command-line override a dotted key came from, from Hydra's runtime record."""

    def __init__(self, cfg: DictConfig, hydra_cfg: Any):
        from hydra.core.hydra_config import HydraConfig

        h = hydra_cfg
        if h is None and isinstance(cfg, DictConfig) and "hydra" in cfg:
            h = cfg.hydra  # compose(..., return_hydra_config=True)
        if h is None and HydraConfig.initialized():
            h = HydraConfig.get()
        self.choices: dict = {}
        self.dirs: list[Path] = []
        self.overrides: list = []
        self.primary: str | None = None
        if h is None:
            return
        self.choices = {k: v for k, v in h.runtime.choices.items() if not k.startswith("hydra/")}
        self.dirs = [Path(s.path) for s in h.runtime.config_sources if s.schema == "file"]
        self.primary = h.job.get("config_name")
        try:
            from hydra.core.override_parser.overrides_parser import OverridesParser
            self.overrides = OverridesParser.create().parse_overrides(list(h.overrides.task))
        except Exception:  # noqa: BLE001  (unparsable overrides: name files only)
            self.overrides = []

    def _file(self, rel: str) -> Path | None:
        """The file Hydra loads for ``group/option.yaml``: the first config source that has it."""
        return next((d / rel for d in self.dirs if (d / rel).is_file()), None)

    def _chain(self, group: str, option: str) -> list[Path]:
        """The option's file and the same-group files it extends through its defaults list."""
        path = self._file(f"{group}/{option}.yaml")
        if path is None:
            return []
        out = [path]
        for entry in OmegaConf.load(path).get("defaults", []) or []:
            if isinstance(entry, str) and entry != "_self_" and not entry.startswith(("/", "optional ")):
                out += self._chain(group, entry)
        return out

    @staticmethod
    def _has(path: Path, key: str) -> bool:
        return OmegaConf.select(OmegaConf.load(path), key, default=_ABSENT) is not _ABSENT

    def where(self, key: str, group: str) -> str:
        def related(k: str) -> bool:  # the override sets this key, a node above it, or a key below it
            k, dotted = re.sub(r"\[(\d+)\]", r".\1", k), re.sub(r"\[(\d+)\]", r".\1", key)
            return k == dotted or dotted.startswith(k + ".") or k.startswith(dotted + ".")

        found = [f"command-line override '{o.input_line}'" for o in self.overrides
                 if o.key_or_group not in self.choices and related(o.key_or_group)]  # (not a group selection)
        option = self.choices.get(group)
        chain = self._chain(group, option) if option else []
        candidates = [(f, key.partition(".")[2], True) for f in chain]
        for g, opt in self.choices.items():  # `# @package _global_` options (experiment, sweep) set any key
            f = self._file(f"{g}/{opt}.yaml") if opt else None
            if f is not None and re.search(r"^#\s*@package\s+_global_", f.read_text(), re.MULTILINE):
                candidates.append((f, key, False))
        if self.primary and self._file(f"{self.primary}.yaml"):
            candidates.append((self._file(f"{self.primary}.yaml"), key, False))
        hit = next(((f, in_group) for f, k, in_group in candidates if k and self._has(f, k)), None)
        if hit is not None:
            found.append(_display(hit[0]) + (f" (config group option {group}={option})" if hit[1] else ""))
        elif not found and option:
            found.append(f"{_display(chain[0]) if chain else group + '/' + option + '.yaml'} "
                         f"(config group option {group}={option})")
        elif not found:
            found.append("the top-level config" if group == "top-level" else f"config group '{group}'")
        return "; ".join(found)


# --- the checks -----------------------------------------------------------------------------------------------------
class _Validator:
    def __init__(self, cfg: DictConfig, schema: type, hydra_cfg: Any = None):
        self.cfg, self.schema = cfg, schema
        self.origin = _Origin(cfg, hydra_cfg)
        self.problems: list[str] = []
        self.groups = {"gan": self.check_gan, "metrics": self.check_metrics, "downstream": self.check_downstream}

    def run(self) -> None:
        raw = OmegaConf.to_container(self.cfg, resolve=False) if isinstance(self.cfg, DictConfig) else dict(self.cfg)
        raw.pop("hydra", None)
        self.check_dataclass(raw, self.schema, "", "top-level")
        self.check_values(raw)
        if self.problems:
            n = len(self.problems)
            raise ConfigError(f"invalid configuration ({n} problem{'s' * (n > 1)}; found before loading any data "
                              f"or training):\n" + "\n".join(self.problems))

    # reporting
    def report(self, group: str, key: str, what: str, bad: str, valid: Iterable[str], note: str = "",
               scope: str | None = None) -> None:
        valid = sorted(map(str, valid))
        close = difflib.get_close_matches(str(bad), valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        lines = [f"- [{group}] {what} '{key}'{hint}{' ' + note if note else ''}",
                 f"    valid {'keys' if 'key' in what else 'names'} of {scope or group}: "
                 f"{', '.join(valid) or '(none)'}",
                 f"    from: {self.origin.where(key, group)}"]
        self.problems.append("\n".join(lines))

    def check_keys(self, node: Any, valid: Iterable[str], path: str, group: str, note: dict | None = None) -> None:
        """Every key of the mapping ``node`` must be in ``valid``; ``note`` explains keys that are refused."""
        if not isinstance(node, dict):
            return
        valid = list(valid)
        for key in node:
            full = f"{path}.{key}" if path else str(key)
            if key in (note or {}):
                self.report(group, full, "key not allowed:", key, valid, note[key], scope=path or None)
            elif key not in valid:
                self.report(group, full, "unknown key", key, valid, scope=path or None)

    def check_dataclass(self, node: Any, schema: type, path: str, group: str) -> None:
        if not isinstance(node, dict):
            return
        fields = {f.name: f for f in dataclasses.fields(schema)}
        self.check_keys(node, fields, path, group)
        hints = typing.get_type_hints(schema)
        for key, value in node.items():
            if key not in fields:
                continue
            sub_path, sub_group = f"{path}.{key}" if path else key, key if not path else group
            if dataclasses.is_dataclass(hints[key]):
                self.check_dataclass(value, hints[key], sub_path, sub_group)
            elif not path and key in self.groups:
                self.groups[key](value)

    def check_values(self, raw: dict) -> None:
        """Top-level values that would otherwise fail (or silently mean something else) only after training."""
        n = raw.get("n_samples")
        if "n_samples" in raw and n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
            self.problems.append(
                f"- [top-level] n_samples={n!r}: must be a positive number of synthetic images, or null (= max(real "
                f"test images, largest feature dimension + 1))\n    from: {self.origin.where('n_samples', 'top-level')}")

    def check_gan(self, gan: Any) -> None:
        import hydra.utils

        target = gan.get("_target_") if isinstance(gan, dict) else None
        try:
            hydra.utils.get_class(str(target))
        except Exception as err:  # noqa: BLE001
            self.problems.append(f"- [gan] gan._target_={target!r} is not an importable GAN class ({err})\n"
                                 f"    from: {self.origin.where('gan._target_', 'gan')}")
            return
        names, forwards = gan_keys(target)
        if not forwards:
            refused = {k: "(the run sets it from the dataset)" for k in GAN_FROM_DATASET}
            self.check_keys(gan, [n for n in names if n not in refused] + ["_target_"], "gan", "gan", refused)

    def check_metrics(self, metrics: Any) -> None:
        if not isinstance(metrics, dict):
            return
        # resolved, so that interpolated names are checked as they will be used (an unresolvable interpolation
        # fails later with its own message)
        with contextlib.suppress(Exception):
            metrics = OmegaConf.to_container(self.cfg.metrics, resolve=True)
        self.check_keys(metrics, [f.name for f in dataclasses.fields(MetricsConfig)], "metrics", "metrics")
        for kind in ("feature", "image", "generator"):
            self.check_names(metrics.get(f"{kind}_metrics"), kind, f"metrics.{kind}_metrics")
            section = "options" if kind == "feature" else f"{kind}_options"
            keys = metric_option_keys(kind)
            if keys is not None:
                self.check_keys(metrics.get(section), keys, f"metrics.{section}", "metrics")
        known = extractor_names()
        for i, entry in enumerate(metrics.get("extractors") or []):
            path = f"metrics.extractors[{i}]"
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or (name not in known and not (":" in name and
                                                                        f"{name.split(':')[0]}:<name>" in known)):
                self.report("metrics", f"{path}.name", f"unknown extractor '{name}' in", name, known,
                            scope="extractors")
                continue
            self.check_names(entry.get("metrics"), "feature", f"{path}.metrics")
            keys = extractor_keys(name)
            if keys is not None:
                from medsynbench.metrics.extractors import CONTEXT_KEYS
                refused = {k: "(the run passes it to every extractor" + ("; set metrics.seed)" if k == "seed" else ")")
                           for k in CONTEXT_KEYS if k not in keys}
                self.check_keys(entry, [*EXTRACTOR_ENTRY_KEYS, *keys], path, "metrics", refused)

    def check_names(self, names: Any, kind: str, path: str) -> None:
        if names is None:
            return
        valid = metric_names(kind)
        for name in names if isinstance(names, list) else [names]:
            if name not in valid:
                note = ""
                for other in ("feature", "image", "generator"):
                    if other != kind and name in metric_names(other):
                        note = f"(it is {'an' if other == 'image' else 'a'} {other} metric: list it in " \
                               f"metrics.{other}_metrics)"
                self.report("metrics", path, f"unknown {kind} metric '{name}' in", name, valid, note,
                            scope=f"{kind} metrics")

    def check_downstream(self, downstream: Any) -> None:
        from medsynbench.benchmark.defaults import AUTO_DOWNSTREAM, is_auto, resolved_downstream
        from medsynbench.downstream.config import SETTINGS, parse_settings, settings_class

        raw = downstream if isinstance(downstream, dict) else {}
        node = self.cfg.downstream if isinstance(self.cfg, DictConfig) else downstream
        option = None
        if is_auto(raw):  # downstream=auto: check the option it stands for (benchmark/defaults.py)
            try:
                node, option = resolved_downstream(self.cfg)
            except Exception as err:  # noqa: BLE001  (an unresolvable dataset.task or a missing option file)
                self.problems.append(f"- [downstream] downstream=auto could not be resolved: {err}\n"
                                     f"    from: {self.origin.where('downstream', 'downstream')}")
                return
            raw = OmegaConf.to_container(node, resolve=True)
        before = len(self.problems)
        self.check_task_fits(raw, option, AUTO_DOWNSTREAM)
        if len(self.problems) > before:
            return
        try:
            cls = settings_class(raw)
        except ValueError:
            self.report("downstream", "downstream.task", f"unknown task '{raw.get('task')}' in", raw.get("task"),
                        SETTINGS, scope="downstream tasks")
            return
        before = len(self.problems)
        self.check_keys(raw, [f.name for f in dataclasses.fields(cls)], "downstream", "downstream")
        if len(self.problems) == before:
            try:
                parse_settings(node)
            except ValueError as err:
                self.problems.append(f"- [downstream] {err}\n    from: {self.origin.where('downstream', 'downstream')}")

    def check_task_fits(self, raw: dict, option: str | None, auto: dict) -> None:
        """A downstream task that cannot run on the dataset's kind of data is a config error (not a run that
        "completes" with skipped scores): segmentation needs a segmentation dataset, classification a labelled one."""
        dataset = self.cfg.get("dataset") if isinstance(self.cfg, DictConfig) else None
        if dataset is None or not isinstance(raw, dict):
            return
        try:
            data_task = dataset.get("task")
        except Exception:  # noqa: BLE001  (an unresolvable interpolation: reported elsewhere)
            return
        task = raw.get("task")
        fits = {"segmentation": ("segmentation",), "classification": ("classification", "segmentation")}
        if task in fits and data_task not in fits[task]:
            choice = option or self.origin.choices.get("downstream")
            chosen = f"downstream={choice}" if choice else f"downstream task {task!r}"
            fitting = {v: k for k, v in auto.items()}
            suggest = next((f"downstream={o}" for o, t in fitting.items() if t == data_task), "downstream=none")
            self.problems.append(
                f"- [downstream] {chosen} (task {task}) does not fit dataset '{dataset.get('name')}' "
                f"(dataset.task={data_task}): use downstream=auto (the default: the task that fits dataset.task) or "
                f"{suggest}\n    from: {self.origin.where('downstream.task', 'downstream')}")

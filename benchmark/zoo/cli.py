"""``medsynbench export`` and ``medsynbench zoo action=<list|find|rank|generate|add|import-medigan|grids|verify>``:
schemas (registered in Hydra's ConfigStore from here) and the two task functions."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from medsynbench.benchmark.config import PathsConfig
from medsynbench.benchmark.validate import ConfigError

ACTIONS = ("list", "find", "rank", "generate", "find-rank-generate", "add", "import-medigan", "grids", "verify")


@dataclass
class ExportConfig:
    run_dir: Optional[str] = None        # a run directory, or:
    sweep_dir: Optional[str] = None      # a multirun directory (or "latest"): export its best run by `metric`
    metric: Optional[str] = None         # ranking metric for sweep_dir (direction from the records)
    step: Optional[int] = None           # checkpoint step (default: the newest valid)
    out_dir: Optional[str] = None        # default: ${paths.results_dir}/zoo/packages/<id>
    package_id: Optional[str] = None     # default: the training id
    registry: Optional[str] = None       # also add the package to this registry index
    overwrite: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # authors, license, citation, tags, ... (win over defaults)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ZooConfig:
    action: str = "list"
    registries: list[str] = field(default_factory=lambda: ["${paths.results_dir}/zoo/registry.json"])
    keywords: list[str] = field(default_factory=list)
    operator: str = "AND"                # AND | OR | XOR
    metric: Optional[str] = None
    model_id: Optional[str] = None
    package: Optional[str] = None        # a package folder (instead of model_id)
    num_samples: int = 100
    batch_size: int = 64
    seed: int = 0
    labels: Optional[list[int]] = None
    output_dir: Optional[str] = None
    global_json: Optional[str] = None    # for import-medigan
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: int = 8
    device: str = "auto"
    format: str = "table"                # table | json
    paths: PathsConfig = field(default_factory=PathsConfig)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="zoo_schema", node=ZooConfig)


def _best_run_of_sweep(cfg) -> str:
    from medsynbench.benchmark.objective import _find
    from medsynbench.benchmark.status import status_report
    from medsynbench.benchmark.store import load_records
    from medsynbench.benchmark.zoo.search import metric_higher_is_better

    if not cfg.metric:
        raise ConfigError("export sweep_dir=... needs metric=<name> to pick the best run")
    report = status_report(OmegaConf.create({"sweep_dir": cfg.sweep_dir, "experiment_name": None, "format": "json",
                                             "heartbeat_timeout_s": 120.0, "paths": OmegaConf.to_container(cfg.paths)}))
    ids = {str(j.get("training_id")) for j in report.get("runs", []) if j.get("training_id")}
    found = []
    for rec in load_records(cfg.paths.store_dir):
        if rec.get("training_id") in ids and rec.get("status") == "completed":
            m = _find(rec, cfg.metric)
            if m is not None and m.get("value") is not None:
                found.append((float(m["value"]), m, rec))
    if not found:
        raise ConfigError(f"no completed run of sweep {cfg.sweep_dir} has the metric {cfg.metric!r}")
    higher = metric_higher_is_better(cfg.metric, [m for _, m, _ in found])
    value, _, rec = (max if higher else min)(found, key=lambda t: t[0])
    print(f"[medsynbench] best of {len(found)} runs by {cfg.metric} ({'higher' if higher else 'lower'} is better): "
          f"{rec['training_id']} = {value:.5g}")
    return rec["run_dir"]


def export_task(cfg) -> None:
    from pathlib import Path

    from medsynbench.benchmark.zoo.package import export_run
    from medsynbench.benchmark.zoo.registry import add_package

    if bool(cfg.run_dir) == bool(cfg.sweep_dir):
        raise ConfigError("export: give exactly one of run_dir=<run directory> or sweep_dir=<multirun dir> metric=...")
    run_dir = cfg.run_dir or _best_run_of_sweep(cfg)
    out_dir = cfg.out_dir or None
    if out_dir is None:
        name = cfg.package_id or Path(run_dir).name + (f"-step{cfg.step}" if cfg.step is not None else "")
        out_dir = Path(cfg.paths.results_dir) / "zoo" / "packages" / name
    pkg = export_run(run_dir, out_dir, store_dir=cfg.paths.store_dir, step=cfg.step,
                     metadata=OmegaConf.to_container(cfg.metadata, resolve=True), package_id=cfg.package_id,
                     overwrite=cfg.overwrite)
    print(f"[medsynbench] exported {run_dir} -> {pkg}")
    if cfg.registry:
        entry = add_package(cfg.registry, pkg)
        print(f"[medsynbench] added {entry['id']} to {cfg.registry}")


def _table(rows: list[dict], cols: list[str]) -> str:
    from tabulate import tabulate

    return tabulate([[r.get(c) for c in cols] for r in rows], headers=cols, tablefmt="github")


def zoo_task(cfg) -> None:
    from medsynbench.benchmark.zoo import generate as gen_mod
    from medsynbench.benchmark.zoo import registry as reg_mod
    from medsynbench.benchmark.zoo import search

    if cfg.action not in ACTIONS:
        raise ConfigError(f"zoo: action={cfg.action!r} is not one of {', '.join(ACTIONS)}")
    if cfg.format not in ("table", "json"):
        raise ConfigError(f"zoo: format must be table or json, got {cfg.format!r}")
    out = print
    registries = list(cfg.registries)
    if cfg.action == "add":
        if not cfg.package:
            raise ConfigError("zoo action=add needs package=<package folder>")
        entry = reg_mod.add_package(registries[0], cfg.package)
        return out(f"[medsynbench] added {entry['id']} to {registries[0]}")
    if cfg.action == "import-medigan":
        if not cfg.global_json:
            raise ConfigError("zoo action=import-medigan needs global_json=<path to medigan global.json>")
        ids = reg_mod.import_medigan(cfg.global_json, registries[0])
        return out(f"[medsynbench] imported {len(ids)} medigan models into {registries[0]} (search only)")
    if cfg.action in ("verify", "grids") or (cfg.action == "generate" and cfg.package):
        if not cfg.package and not cfg.model_id:
            raise ConfigError(f"zoo action={cfg.action} needs package=<folder> or model_id=<id>")
    if cfg.action == "verify":
        from medsynbench.benchmark.zoo.package import verify_package

        path = cfg.package or reg_mod.Registry.open(registries).resolve(cfg.model_id)
        vp = verify_package(path)
        return out(f"[medsynbench] {vp.id}: {len(vp.manifest['files'])} files verified ({path})")
    if cfg.action == "grids":
        from medsynbench.benchmark.zoo.grids import write_grids

        path = cfg.package or reg_mod.Registry.open(registries).resolve(cfg.model_id)
        result = write_grids(path, cfg.output_dir or f"{cfg.paths.results_dir}/zoo/grids/{Path(path).name}",
                             seeds=list(cfg.seeds), steps=cfg.steps, device=cfg.device)
        return out(f"[medsynbench] written {result['interpolation']}, {result['sweep']} and {result['html']}")
    if cfg.action == "generate" and cfg.package:
        result = gen_mod.generate(cfg.package, num_samples=cfg.num_samples, output_dir=_gen_dir(cfg), seed=cfg.seed,
                                  batch_size=cfg.batch_size, labels=_labels(cfg), device=cfg.device)
        return out(f"[medsynbench] generated {result['n']} samples -> {result['manifest']}")
    reg = reg_mod.Registry.open(registries)
    if cfg.action == "list":
        rows = [{"id": e.id, "modality": e.metadata.get("modality"), "dataset": (e.metadata.get("dataset") or {})
                 .get("name") if isinstance(e.metadata.get("dataset"), dict) else e.metadata.get("dataset"),
                 "architecture": (e.metadata.get("architecture") or {}).get("name"),
                 "resolution": e.metadata.get("resolution"), "loadable": e.loadable, "registry": e.registry}
                for e in reg]
        return out(json.dumps(rows, indent=2, default=str) if cfg.format == "json" else _table(
            rows, ["id", "modality", "dataset", "architecture", "resolution", "loadable", "registry"]))
    if cfg.action == "find":
        ids = search.find(reg, list(cfg.keywords), cfg.operator)
        return out(json.dumps(ids) if cfg.format == "json" else "\n".join(ids) or "(no match)")
    if not cfg.metric and cfg.action in ("rank", "find-rank-generate"):
        raise ConfigError(f"zoo action={cfg.action} needs metric=<name>")
    if cfg.action == "rank":
        ids = search.find(reg, list(cfg.keywords), cfg.operator) if cfg.keywords else None
        ranking = search.rank(reg, cfg.metric, ids)
        if cfg.format == "json":
            return out(json.dumps(ranking.as_dict(), indent=2))
        out(f"ranked by {cfg.metric} ({'higher' if ranking.higher_is_better else 'lower'} is better)")
        out(_table(ranking.as_dict()["ranked"], ["rank", "id", "value"]))
        return out(f"without {cfg.metric}: {', '.join(ranking.missing) or 'none'}")
    if cfg.action == "generate":
        if not cfg.model_id:
            raise ConfigError("zoo action=generate needs model_id=<id> (or package=<folder>)")
        result = gen_mod.generate(reg, cfg.model_id, cfg.num_samples, output_dir=_gen_dir(cfg), seed=cfg.seed,
                                  batch_size=cfg.batch_size, labels=_labels(cfg), device=cfg.device)
        return out(f"[medsynbench] generated {result['n']} samples -> {result['manifest']}")
    ranking, result = search.find_rank_and_generate(reg, list(cfg.keywords), cfg.metric, cfg.num_samples,
                                                    cfg.operator, output_dir=lambda best: _gen_dir(cfg, best),
                                                    seed=cfg.seed,
                                                    batch_size=cfg.batch_size, device=cfg.device,
                                                    labels=_labels(cfg))
    out(f"[medsynbench] best by {cfg.metric}: {ranking.best}; generated {result['n']} samples -> "
        f"{result['manifest']}")


def _labels(cfg):
    return None if cfg.labels is None else list(cfg.labels)


def _gen_dir(cfg, model_id: str | None = None) -> str:
    """``output_dir``, else ``<results>/zoo/generated/<model id or package folder name>-n<N>-s<seed>``."""
    name = model_id or cfg.model_id or Path(cfg.package).name
    return cfg.output_dir or f"{cfg.paths.results_dir}/zoo/generated/{name}-n{cfg.num_samples}-s{cfg.seed}"

"""The value ``medsynbench train`` returns to a sweeper: one metric of the run's record (``objective.metric``).

- Feature / image metrics are named as in the record (``kid_unet``, ``fd_unet``, ``precision_k3_unet``);
  downstream scores as ``<metric>@<train_on>`` (``dice_unet@synthetic``), as in the leaderboard.
- The direction comes from the record (``higher_is_better``); an explicit ``objective.direction`` (set by the user, or
  by the Optuna sweeper from ``hydra.sweeper.direction``) that contradicts it is an :class:`ObjectiveDirectionError`:
  a configuration error that stops the search, not a failed trial.
- A run that failed or diverged, a record without the metric, or a non-finite value raise :class:`TrialFailed`, so
  that a sweeper records the trial as failed (hydra-optuna-sweeper marks a trial FAIL when its job raised; a NaN
  return would make optuna 2.x's ``tell`` raise inside the plugin's error handler and abort the whole search).
"""
from __future__ import annotations

import math

DIRECTIONS = ("minimize", "maximize")


class TrialFailed(RuntimeError):
    """The run gives no objective value (failed, diverged, metric missing or not finite)."""


class ObjectiveDirectionError(ValueError):
    """The sweeper's direction contradicts the metric's ``higher_is_better``."""


def _find(record: dict, metric: str) -> dict | None:
    if "@" in metric:
        name, _, train_on = metric.partition("@")
        return next((d for d in record.get("downstream", [])
                     if d.get("metric") == name and d.get("train_on") == train_on and not d.get("skipped")), None)
    return next((m for m in record.get("metrics", []) if m.get("metric") == metric), None)


def available(record: dict) -> list[str]:
    return ([m["metric"] for m in record.get("metrics", [])]
            + [f"{d['metric']}@{d['train_on']}" for d in record.get("downstream", []) if not d.get("skipped")])


def check_direction(metric: str, higher_is_better: bool, direction: str | None) -> None:
    direction = str(direction or "auto")
    if direction == "auto":
        return
    if direction not in DIRECTIONS:
        raise ObjectiveDirectionError(f"objective direction {direction!r}: use auto, minimize or maximize")
    want = "maximize" if higher_is_better else "minimize"
    if direction != want:
        raise ObjectiveDirectionError(
            f"objective {metric!r} is {'higher' if higher_is_better else 'lower'} is better, so it must be "
            f"{want}d, but the direction is {direction!r}: set hydra.sweeper.direction={want} (or auto)")


def objective_value(record: dict, metric: str, direction: str | None = "auto") -> float:
    """The value of ``metric`` in ``record``; raises :class:`TrialFailed` / :class:`ObjectiveDirectionError`."""
    run = record.get("run_id", "?")
    status = record.get("status")
    if status != "completed":
        why = f": {record['error']}" if record.get("error") else ""
        raise TrialFailed(f"run {run} {status}{why}; no value of the objective {metric!r}")
    found = _find(record, metric)
    if found is None:
        raise TrialFailed(f"run {run}: the record has no metric {metric!r} (objective.metric); it has "
                          f"{', '.join(available(record)) or 'none'}")
    check_direction(metric, bool(found.get("higher_is_better", False)), direction)
    value = found.get("value")
    if value is None or not math.isfinite(float(value)):
        raise TrialFailed(f"run {run}: objective {metric!r} is {value!r} (not a finite number)")
    return float(value)


def metric_direction(metric: str) -> str | None:
    """``minimize`` / ``maximize`` for a metric name as records spell it, from the metric registry (before any run);
    ``None`` when the name matches no registered metric."""
    if "@" in metric:  # downstream scores (Dice, accuracy, AUC, F1) are all higher-is-better
        return "maximize"
    import medsynbench.metrics  # noqa: F401  (registers every metric)
    from medsynbench.metrics.registry import get_metric, list_metrics

    names = list_metrics() + ["precision", "recall", "density", "coverage"]
    base = "fd" if metric == "fid_inception" or metric.startswith("fid_") else None
    if base is None:
        hits = [n for n in names if metric == n or metric.startswith(n + "_")]
        base = max(hits, key=len) if hits else None
    if base is None:
        return None
    if base in ("precision", "recall", "density", "coverage"):
        return "maximize"
    return "maximize" if get_metric(base).higher_is_better else "minimize"

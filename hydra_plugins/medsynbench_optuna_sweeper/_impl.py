"""hydra-optuna-sweeper (1.2/1.3, optuna 2.x) with the semantics a budgeted GAN search needs.

Differences from the stock ``OptunaSweeperImpl.sweep`` (everything else — search-space syntax, samplers, launchers,
``optimization_results.yaml`` — is the plugin's own code):

- **Budget = total trials of the study.** ``n_trials`` counts the finished trials (complete, failed, pruned) already
  in the storage: relaunching an interrupted search with the same storage and study name runs only what is left
  (the stock sweeper runs ``n_trials`` *more* trials at every launch).
- **Interrupted trials are resumed.** A trial still RUNNING in the storage whose sweeper process is gone (same host,
  dead pid; every trial records its owner as the user attribute ``medsynbench_sweeper``) is launched again with its
  own parameters and number; medsynbench's run identity resumes its training from the last checkpoint. Running
  trials of live sweepers or of other hosts are left alone.
- **A continued study reseeds the sampler**, so that a seeded sampler does not replay the first launch's proposals.
- **Objective and direction.** ``objective.metric`` (top-level config or a fixed override) is required;
  ``direction: auto`` takes it from the metric registry (``benchmark.objective.metric_direction``), an explicit
  direction that contradicts it stops the search before any trial, and every trial gets ``objective.direction=<d>``
  so that ``medsynbench train`` checks it against the record's ``higher_is_better`` as well.
- **Failures.** A trial whose job raised (failed or diverged run, missing or non-finite metric) is told FAIL with the
  error in its user attributes; ``max_failure_rate`` (per batch, as in the plugin) decides whether the search goes on.
  A direction contradiction is a configuration error and always stops the search.
- **Storage.** The parent folder of a ``sqlite:///`` file is created; a loaded study must have the same direction.
  Each trial records the run's ``training_id`` / ``evaluation_id`` (from the job's ``objective.json``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)
OWNER_ATTR = "medsynbench_sweeper"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: Optional[str]) -> bool:
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def _sqlite_parent(storage: Any) -> None:
    url = str(storage) if storage is not None else ""
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


class BudgetedOptunaSweeperImpl(OptunaSweeperImpl):
    def _objective(self, fixed_params: Dict[str, Any]) -> tuple[str, str]:
        from medsynbench.benchmark.objective import DIRECTIONS, ObjectiveDirectionError, metric_direction

        metric = fixed_params.get("objective.metric") or OmegaConf.select(self.config, "objective.metric")
        if not metric:
            raise ValueError("an Optuna search needs objective.metric (e.g. objective.metric=kid_unet): the metric "
                             "of the run's record that medsynbench train returns")
        metric = str(metric)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError(f"one objective, one direction: hydra.sweeper.direction={directions}")
        wanted, inferred = str(directions[0]), metric_direction(metric)
        if wanted == "auto":
            if inferred is None:
                raise ValueError(f"cannot tell whether {metric!r} is to be minimised or maximised (not a registered "
                                 f"metric name): set hydra.sweeper.direction=minimize or maximize")
            return metric, inferred
        if wanted not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={wanted!r}: use auto, minimize or maximize")
        if inferred is not None and inferred != wanted:
            raise ObjectiveDirectionError(
                f"objective {metric!r} must be {inferred}d (its metric's higher_is_better), but "
                f"hydra.sweeper.direction={wanted}: set it to {inferred} or auto")
        return metric, wanted

    def sweep(self, arguments: List[str]) -> None:  # noqa: C901  (one loop, as the plugin's)
        from medsynbench.benchmark.objective import ObjectiveDirectionError

        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        space, fixed_params = create_params_from_overrides(params_conf)
        if self.search_space_distributions:
            space = {**self.search_space_distributions, **space}
        for name in fixed_params:
            space.pop(name, None)
        if isinstance(self.sampler, optuna.samplers.GridSampler) or (
                getattr(self.sampler, "func", None) is optuna.samplers.GridSampler):
            raise ValueError("the grid sampler is the basic sweeper's job (conf/sweep/table1_*.yaml)")
        metric, direction = self._objective(fixed_params)
        user_direction = fixed_params.get("objective.direction")
        if user_direction not in (None, "auto", direction):
            raise ObjectiveDirectionError(f"objective.direction={user_direction} contradicts {metric!r} ({direction})")

        _sqlite_parent(self.storage)
        if self.storage is not None and self.study_name is None:
            log.warning("no hydra.sweeper.study_name: this study cannot be continued by name")
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    direction=direction, load_if_exists=True)
        if [d.name.lower() for d in study.directions] != [direction]:
            raise ValueError(f"study {study.study_name!r} in {self.storage} has direction "
                             f"{study.directions[0].name.lower()}, this search {direction}: use another study_name")
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        stale = [t for t in trials if t.state == TrialState.RUNNING and _owner_gone(t.user_attrs.get(OWNER_ATTR))]
        if trials and hasattr(self.sampler, "reseed_rng"):
            self.sampler.reseed_rng()
        to_go = self.n_trials - finished
        log.info(f"Study name: {study.study_name}")
        log.info(f"Storage: {self.storage}")
        log.info(f"Sampler: {type(self.sampler).__name__}")
        log.info(f"Objective: {metric} ({direction})")
        log.info(f"Budget: {self.n_trials} trials; {finished} finished, {len(stale)} interrupted to resume, "
                 f"{max(to_go, 0)} to run")
        print(f"[medsynbench] optuna study {study.study_name!r}: budget {self.n_trials}, {finished} finished, "
              f"{len(stale)} interrupted (resumed), {max(to_go, 0)} to run")
        pending = [optuna.trial.Trial(study, t._trial_id) for t in stale]
        me = _owner()
        while to_go > 0:
            size = min(to_go, self.n_jobs)
            batch, pending = pending[:size], pending[size:]
            batch += [study.ask() for _ in range(size - len(batch))]
            for trial in batch:
                trial.set_user_attr(OWNER_ATTR, me)
            overrides = self._configure_trials(batch, space, fixed_params)
            if user_direction is None:
                overrides = [(*o, f"objective.direction={direction}") for o in overrides]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures, config_error = [], None
            for trial, ret in zip(batch, returns):
                note = self._note(ret)
                for key in ("training_id", "evaluation_id", "status"):
                    if note.get(key) is not None:
                        trial.set_user_attr(key, note[key])
                try:
                    value = float(ret.return_value)  # re-raises the job's exception
                    if not math.isfinite(value):
                        raise ValueError(f"objective value {value}")
                    study.tell(trial, value)
                except Exception as err:  # noqa: BLE001
                    trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning(f"Failed trial {trial.number}: {err}")
                    failures.append(err)
                    if isinstance(err, ObjectiveDirectionError):
                        config_error = err
            if config_error is not None:
                raise config_error
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                log.error(f"{len(failures)} of {len(returns)} trials failed (max_failure_rate="
                          f"{self.max_failure_rate})")
                raise failures[0]
            to_go -= size

        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        results: Dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": str(self.storage),
                                   "objective": metric, "direction": direction,
                                   "n_trials": len(study.trials), "n_complete": len(done)}
        if done:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number,
                           best_training_id=best.user_attrs.get("training_id"))
            log.info(f"Best parameters: {best.params}")
            log.info(f"Best value: {best.value}")
            print(f"[medsynbench] best trial {best.number}: {metric} = {best.value} {json.dumps(best.params)}")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)  # (no trial ran: no folder yet)
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")

    @staticmethod
    def _note(ret: Any) -> dict:
        """The job's objective.json (written by medsynbench train in a multirun): the trial's run ids."""
        try:
            out = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) / "objective.json"
            return json.loads(out.read_text()) if out.is_file() else {}
        except Exception:  # noqa: BLE001  (only informative)
            return {}

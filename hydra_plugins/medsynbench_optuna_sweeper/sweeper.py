"""Thin plugin class (Hydra imports every module under hydra_plugins at start-up: optuna is imported lazily)."""
from __future__ import annotations

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class BudgetedOptunaSweeper(Sweeper):
    """hydra-optuna-sweeper's OptunaSweeper with medsynbench's budget, resume and objective semantics."""

    def __init__(self, sampler: Any, direction: Any, storage: Optional[Any], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, search_space: Optional[DictConfig],
                 custom_search_space: Optional[str], params: Optional[DictConfig]) -> None:
        from ._impl import BudgetedOptunaSweeperImpl

        self.sweeper = BudgetedOptunaSweeperImpl(sampler, direction, storage, study_name, n_trials, n_jobs,
                                                 max_failure_rate, search_space, custom_search_space, params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.sweeper.sweep(arguments)

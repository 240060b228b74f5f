"""medsynbench's Optuna sweeper: hydra-optuna-sweeper with a total trial budget, resumable studies and the run's
objective (see _impl.py). Config: conf/hydra/sweeper/medsynbench_optuna.yaml."""

"""Federated GAN training with Flower (``medsynbench train federated=<preset>``); see docs/federated.md."""
from medsynbench.benchmark.federated.config import FederatedConfig, enabled


def run_federated(*args, **kwargs):
    from medsynbench.benchmark.federated.orchestrate import run_federated as run

    return run(*args, **kwargs)


__all__ = ["FederatedConfig", "enabled", "run_federated"]

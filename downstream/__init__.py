"""Downstream tasks: is synthetic data useful? A task model (smp U-Net for segmentation, timm EfficientNet for
classification) is trained on real, synthetic and real+synthetic data and always scored on the held-out real test
split.

    from medsynbench.downstream import run_downstream, list_tasks
"""
from medsynbench.downstream.config import TRAIN_ON, parse_settings
from medsynbench.downstream.runner import list_tasks, run_downstream
from medsynbench.downstream.weights import WeightsUnavailableError

__all__ = ["run_downstream", "list_tasks", "parse_settings", "TRAIN_ON", "WeightsUnavailableError"]

"""Downstream tasks: is synthetic data useful? A task model (smp U-Net for segmentation, timm EfficientNet for
classification) is trained on real, synthetic and real+synthetic data and always scored on the held-out real test
split.

    from downstream import run_downstream, list_tasks
"""
from downstream.config import TRAIN_ON, parse_settings
from downstream.runner import list_tasks, run_downstream
from downstream.weights import WeightsUnavailableError

__all__ = ["run_downstream", "list_tasks", "parse_settings", "TRAIN_ON", "WeightsUnavailableError"]

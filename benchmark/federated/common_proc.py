"""Start-up shared by the server and client processes: the run's resolved config and the federation plan."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf


def setup(fed: Path, role: str):
    import torch

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.load(fed / "config.yaml")
    plan = json.loads((fed / "plan.json").read_text())
    torch.set_num_threads(int(cfg.get("num_threads") or os.environ.get("MEDSYNBENCH_FED_THREADS", "1")))
    return cfg, plan

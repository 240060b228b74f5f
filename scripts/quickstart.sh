#!/usr/bin/env bash
# README command 1: set up, then run the quickstart benchmark on the embedded data and print its leaderboards.
# Extra arguments are passed to `medsynbench train` as Hydra overrides (e.g. device=cuda train.steps=2000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
.venv/bin/medsynbench train --multirun experiment=quickstart "$@"
# Headline: kid_unet (unbiased at the 80 test images); fd_inf_unet / fd_unet beside it carry their small-sample
# warnings (marked †). Rows = distinct configs (only seeds averaged), ranked by the first metric.
.venv/bin/medsynbench leaderboard 'metric=[kid_unet,fd_inf_unet,fd_unet,precision_k3_unet,recall_k3_unet,coverage_k3_unet]' \
  +filter.experiment_name=quickstart-v1
.venv/bin/medsynbench leaderboard 'metric=[dice_unet@synthetic,dice_unet@real,dice_unet@real+synthetic]' \
  +filter.experiment_name=quickstart-v1

#!/usr/bin/env bash
# README command 1: set up, then run the quickstart benchmark on the embedded data and print its leaderboards.
# Extra arguments are passed to `medsynbench train` as Hydra overrides (e.g. device=cuda train.steps=2000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
.venv/bin/medsynbench train --multirun experiment=quickstart "$@"
.venv/bin/medsynbench leaderboard metric=fd_unet group_by='[gan.name,dataset.name,data.train_size]'
.venv/bin/medsynbench leaderboard metric=dice_unet@synthetic group_by='[gan.name,dataset.name,data.train_size]'
.venv/bin/medsynbench leaderboard metric=dice_unet@real group_by='[gan.name,dataset.name,data.train_size]'

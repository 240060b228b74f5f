#!/usr/bin/env bash
# Create .venv (if missing) and install medsynbench into it, editable, with its test dependencies.
# torch/torchvision are pinned here (TORCH_SPEC to change): on the project's CI machines these exact releases lie on
# local disk; elsewhere pip fetches them from PyPI (CUDA build on Linux x86_64, which also runs on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $TORCH_SPEC 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision" || { echo "[setup] torch install failed" >&2; exit 1; }
fi
stamp=.venv/.medsynbench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing medsynbench (editable) and its dependencies"
  .venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import medsynbench.benchmark.cli, hydra, segmentation_models_pytorch" || { echo "[setup] install failed" >&2; exit 1; }
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"

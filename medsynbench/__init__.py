"""medsynbench: benchmarking generative models for medical image synthesis.

Everything installs under this one namespace: ``medsynbench.benchmark`` (orchestration, store, reports, CLI),
``medsynbench.gans``, ``medsynbench.metrics``, ``medsynbench.downstream`` and the configs in ``medsynbench/conf``.
In the repository those live in the top-level folders ``benchmark/``, ``gans/``, ``metrics/``, ``downstream/`` and
``conf/`` (the design card's layout); a wheel maps them into this package (``package-dir`` in ``pyproject.toml``),
and in a source checkout this package's search path is extended to the repository root, so the same import names
work in both.

The modules directly in this folder are the lowest layer, shared by every other package: ``gans``, ``metrics`` and
``downstream`` are libraries, ``benchmark`` orchestrates them; all four may import this layer and it imports none of
them: data containers (:mod:`medsynbench.types`), atomic writes, content hashes and file locks
(:mod:`medsynbench.io`), verified checkpoint loading (:mod:`medsynbench.checkpoints`).
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SOURCE_ROOT = _HERE.parent
if not (_HERE / "benchmark").is_dir() and (_SOURCE_ROOT / "benchmark" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_ROOT))  # type: ignore[name-defined]  # source checkout: subpackages at the root


def config_dir() -> Path:
    """The bundled Hydra config tree: ``medsynbench/conf`` in an installed wheel, ``conf/`` in a source checkout."""
    for candidate in (_HERE / "conf", _SOURCE_ROOT / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"medsynbench's config tree (conf/config.yaml) is neither in {_HERE / 'conf'} nor in "
                            f"{_SOURCE_ROOT / 'conf'}; the installation is incomplete")

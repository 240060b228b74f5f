"""Installing medsynbench like any Python package: build the wheel from a copy of the sources, install it into a
fresh virtual environment (its dependencies, torch included, come from the repository's .venv, without the editable
install of medsynbench), and use it from an empty folder outside the repository: a smoke training on a user's own
dataset (a yaml in --config-dir), a leaderboard, `python -m medsynbench --help`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "medsynbench", "benchmark", "gans", "metrics", "downstream",
           "conf", "hydra_plugins", "data")
MAPPED = {"benchmark": "medsynbench/benchmark", "gans": "medsynbench/gans", "metrics": "medsynbench/metrics",
          "downstream": "medsynbench/downstream", "medsynbench": "medsynbench", "conf": "medsynbench/conf",
          "hydra_plugins": "hydra_plugins", "data": "medsynbench/data"}
SHIPPED = {"conf": "*.yaml", "data": "isic2018_mini/**/*"}  # the other folders: every module (*.py)

DATASET_YAML = """\
# a user's own dataset, outside the repository: images + masks in two folders
name: tiny_polyps
format: folder
root: {root}
task: segmentation
images_dir: images
masks_dir: masks
mask_pattern: "{{name}}"
mask_mode: binary
split: random
val_fraction: 0.0
test_fraction: 0.25
split_seed: 0
"""
SMOKE = ["dataset=tiny_polyps", "train=smoke", "data.image_size=16", "device=cpu", "num_threads=1", "metrics=smoke",
         "downstream=smoke", "gan.g_filters=8", "gan.d_filters=8", "seed=1"]


def _run(argv, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _tiny_dataset(root: Path, n: int = 24) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        yy, xx = np.mgrid[:24, :24]
        cy, cx, r = rng.integers(7, 17), rng.integers(7, 17), rng.integers(3, 7)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255
        img = rng.integers(40, 90, (24, 24, 3)).astype(np.uint8)
        img[mask > 0] = (200, 80, 60)
        Image.fromarray(img).save(root / "images" / f"p{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i:02d}.png")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the build writes build/ and egg-info next to the sources)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
          tmp / "dist", src], cwd=tmp, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (found,) = (tmp / "dist").glob("medsynbench-*.whl")
    return found


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("medsynbench/__init__.py", "medsynbench/__main__.py", "medsynbench/benchmark/cli.py",
                     "medsynbench/conf/config.yaml", "medsynbench/conf/hydra/help/medsynbench.yaml",
                     "hydra_plugins/medsynbench_optuna_sweeper/__init__.py",
                     "medsynbench/data/isic2018_mini/SOURCE.md", "medsynbench/data/isic2018_mini/labels.csv"):
        assert required in names, f"{required} is not in {wheel.name}"
    tops = {n.split("/")[0] for n in names if not n.startswith("medsynbench-")}
    assert tops == {"medsynbench", "hydra_plugins"}, f"top-level names besides medsynbench: {sorted(tops)}"
    assert "hydra_plugins/__init__.py" not in names, "hydra_plugins must stay a namespace package"
    # every module, config and embedded data file of the repository's folders is shipped (a new subpackage that
    # pyproject.toml does not list would be missing)
    missing = []
    for folder, prefix in MAPPED.items():
        pattern = SHIPPED.get(folder, "*.py")
        for path in (REPO / folder).glob(pattern) if "/" in pattern else (REPO / folder).rglob(pattern):
            rel = path.relative_to(REPO / folder).as_posix()
            if path.is_file() and f"{prefix}/{rel}" not in names:
                missing.append(f"{folder}/{rel}")
    assert not missing, f"not in the wheel: {missing[:20]}"


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; the .venv's site-packages (torch, hydra, ...) through a .pth path line,
    which Python does not scan for .pth files, so the editable medsynbench finder of the .venv stays off."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root, env=dict(os.environ))
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root,
                        env=dict(os.environ)).stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])
    (purelib / "_repo_venv_deps.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=root, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return venv


def _env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDSYNBENCH_SHARED_DATA", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


def test_installed_modules_come_from_the_venv(venv, tmp_path):
    code = ("import json, medsynbench, medsynbench.benchmark.cli as cli, hydra_plugins.medsynbench_optuna_sweeper as p;"
            "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
            "sweepers = [s for s in Plugins.instance().discover(Sweeper) if 'medsynbench' in s.__module__];"
            "print(json.dumps({'pkg': medsynbench.__file__, 'cli': cli.__file__, 'plugin': p.__file__,"
            "'conf': str(medsynbench.config_dir()), 'sweepers': [__import__('sys').modules[s.__module__].__file__"
            " for s in sweepers]}))")
    paths = json.loads(_run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=_env(venv)).stdout)
    for key in ("pkg", "cli", "plugin", "conf"):
        assert Path(paths[key]).resolve().is_relative_to(venv.resolve()), paths
        assert not Path(paths[key]).resolve().is_relative_to(REPO.resolve()), paths
    assert paths["sweepers"] and all(Path(p).resolve().is_relative_to(venv.resolve()) for p in paths["sweepers"])
    usage = _run([venv / "bin" / "python", "-m", "medsynbench", "--help"], cwd=tmp_path, env=_env(venv)).stdout
    assert "evaluate-folder" in usage and "leaderboard" in usage
    train_help = _run([venv / "bin" / "medsynbench", "train", "--help"], cwd=tmp_path, env=_env(venv)).stdout
    assert "isic_mini" in train_help and "dcgan" in train_help  # the config groups of the shipped conf/
    # the default dataset (the embedded ISIC mini set) resolves to the data shipped in the package
    job = _run([venv / "bin" / "medsynbench", "train", "--cfg", "job", "--resolve", "--package", "dataset"],
               cwd=tmp_path, env=_env(venv)).stdout
    root = Path(yaml.safe_load(job)["root"]).resolve()  # (--package dataset: the dataset node's keys)
    assert root.is_relative_to(venv.resolve()) and len(list((root / "images").glob("*.png"))) == 240, root


def test_smoke_training_and_leaderboard_from_an_empty_folder(venv, tmp_path):
    _tiny_dataset(tmp_path / "tiny_polyps")
    (tmp_path / "my_conf" / "dataset").mkdir(parents=True)
    (tmp_path / "my_conf" / "dataset" / "tiny_polyps.yaml").write_text(DATASET_YAML.format(root=tmp_path /
                                                                                          "tiny_polyps"))
    work = tmp_path / "work"
    work.mkdir()
    # a repository around the venv: an installed medsynbench records no git commit (not that repository's)
    git = shutil.which("git")
    if git:
        for args in (["init", "-q"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty",
                                      "-m", "x"]):
            subprocess.run([git, *args], cwd=venv.parent, check=True, capture_output=True)
    env = _env(venv)
    medsynbench = venv / "bin" / "medsynbench"
    train = _run([medsynbench, "train", "--config-dir", tmp_path / "my_conf", *SMOKE], cwd=work, env=env)
    assert "completed" in train.stdout, train.stdout[-3000:]
    (record_file,) = (work / "results" / "store" / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed" and record["dataset"] == "tiny_polyps"
    assert record["versions"]["medsynbench"] == "0.1.0" and record["git_commit"] is None, record["git_commit"]
    assert any(m["metric"] == "kid_random_cnn" for m in record["metrics"])
    run_dir = (work / record["run_dir"]).resolve()  # paths.results_dir=results: relative to the working folder
    assert (run_dir / "checkpoints").is_dir() and run_dir.is_relative_to(work.resolve()), record["run_dir"]
    board = _run([medsynbench, "leaderboard", "metric=kid_random_cnn"], cwd=work, env=env)
    written = sorted(p.suffix for p in (work / "results" / "leaderboards").glob("kid_random_cnn*"))
    assert {".md", ".csv", ".json"} <= set(written), (written, board.stdout)
    assert "tiny_polyps" in board.stdout
    # a user error of the installed CLI: one message, no traceback
    bad = subprocess.run([medsynbench, "train", "--config-dir", tmp_path / "my_conf", *SMOKE, "gan=no_such_gan"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "Could not find 'gan/no_such_gan'" in bad.stderr
    assert not list(REPO.glob("results/store/records/tiny_polyps-*")), "the installed package wrote into the repo"

"""Misspelt keys fail before any training (benchmark/validate.py), in every group and in every form:

- in a YAML file of a user config dir (``hydra.searchpath`` / ``--config-dir``),
- as a command-line override of an existing key, misspelt (Hydra refuses it itself),
- as a ``+`` addition (which Hydra accepts even on typed nodes; the validator refuses it).

Every shipped config passes (no false positives). One test runs the real CLI and checks that nothing was trained.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from medsynbench.benchmark.config import register_configs
from medsynbench.benchmark.validate import (
    ConfigError,
    validate_evaluate_folder_config,
    validate_run_config,
)
from tests.conftest import CONF_DIR, REPO, compose_config

SMOKE = ["train=smoke", "data.image_size=32", "device=cpu", "metrics=smoke", "downstream=smoke"]


def compose_with(overrides: list[str], user_dir: Path | None = None, config_name: str = "config"):
    """Compose as the CLI does, with the Hydra runtime record (choices, sources, overrides) and an optional user
    config dir on the search path (what ``--config-dir`` does)."""
    register_configs()
    GlobalHydra.instance().clear()
    extra = [f"hydra.searchpath=[file://{user_dir}]"] if user_dir else []
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose(config_name=config_name, overrides=[*extra, *overrides], return_hydra_config=True)


# group, user yaml (group/typo.yaml), misspelt override of an existing key, `+` addition, bad key, a valid key.
# Structured groups (data, dataset, train, top level) are typed, so Hydra itself refuses the YAML typo at compose.
CASES = {
    "gan": ("gan", "defaults: [dcgan, _self_]\nlatnt_dim: 3\n", "gan.latnt_dim=3", "+gan.latnt_dim=3",
            "gan.latnt_dim", "latent_dim"),
    "data": ("data", "defaults: [default, _self_]\nimag_size: 32\n", "data.imag_size=32", "+data.imag_size=32",
             "data.imag_size", "image_size"),
    "dataset": ("dataset", "defaults: [isic_mini, _self_]\nrooot: /x\n", "dataset.rooot=/x", "+dataset.rooot=/x",
                "dataset.rooot", "root"),
    "train": ("train", "defaults: [smoke, _self_]\nstepz: 3\n", "train.stepz=3", "+train.stepz=3",
              "train.stepz", "steps"),
    "metrics": ("metrics", "defaults: [smoke, _self_]\nfeature_metricz: [fd]\n", "metrics.feature_metricz=[fd]",
                "+metrics.feature_metricz=[fd]", "metrics.feature_metricz", "feature_metrics"),
    "extractor_option": ("metrics",
                         "defaults: [smoke, _self_]\nextractors:\n  - name: random_cnn\n    feature_dimm: 8\n",
                         "metrics.extractors.0.feature_dimm=8", "+metrics.extractors.0.feature_dimm=8",
                         "metrics.extractors[0].feature_dimm", "feature_dim"),
    "feature_metric_name": ("metrics", "defaults: [smoke, _self_]\nfeature_metrics: [fd, kidd]\n", None,
                            "+metrics.feature_metrics=[fd,kidd]", "metrics.feature_metrics", "kid"),
    "options": ("metrics", "defaults: [smoke, _self_]\noptions:\n  kk: 3\n", "metrics.options.kk=3",
                "+metrics.options.kk=3", "metrics.options.kk", "kid_subsets"),
    "image_options": ("metrics", "defaults: [default, _self_]\nimage_options:\n  bitdepth: 8\n",
                      "metrics.image_options.bitdepth=8", "+metrics.image_options.bitdepth=8",
                      "metrics.image_options.bitdepth", "bit_depth"),
    "downstream": ("downstream", "defaults: [smoke, _self_]\nstepz: 3\n", "downstream.stepz=3", "+downstream.stepz=3",
                   "downstream.stepz", "steps"),
    "top_level": ("experiment", "# @package _global_\nseedd: 3\n", "seedd=3", "+seedd=3", "seedd", "seed"),
}
TYPED = {"data", "dataset", "train", "top_level"}


def assert_validator_message(err: ConfigError, bad_key: str, valid_key: str, origin: str) -> None:
    msg = str(err)
    assert f"'{bad_key}'" in msg, msg
    assert "valid keys" in msg or "valid names" in msg, msg
    assert valid_key in msg.split("valid ", 1)[1], msg
    assert f"from: {origin}" in msg or origin in msg.split("from: ", 1)[1], msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_typo_in_user_yaml(case, tmp_path):
    group, text, _, _, bad_key, valid_key = CASES[case]
    (tmp_path / group).mkdir()
    (tmp_path / group / "typo.yaml").write_text(text)
    if case in TYPED:  # typed node: Hydra refuses the key while merging the file, naming the key and the file
        with pytest.raises(ConfigCompositionException) as info:
            compose_with([*SMOKE, f"{group}=typo"], tmp_path)
        assert f"'{bad_key.rsplit('.', 1)[-1]}'" in str(info.value) and f"{group}/typo" in str(info.value)
        return
    cfg = compose_with([*SMOKE, f"{group}=typo"], tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_run_config(cfg)
    assert_validator_message(info.value, bad_key, valid_key, str(tmp_path / group / "typo.yaml"))
    assert f"config group option {group}=typo" in str(info.value)


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][2]))
def test_misspelt_override_of_existing_key(case):
    """Hydra refuses it at compose time, naming the key and telling how to add a new key."""
    override = CASES[case][2]
    key = override.split("=", 1)[0]
    with pytest.raises(ConfigCompositionException) as info:
        compose_with([*SMOKE, override])
    msg = str(info.value)
    assert f"Could not override '{key}'" in msg and f"+{override}" in msg, msg


def test_misspelt_value_override_of_a_name():
    """A misspelt metric *name* is a value, not a key: the validator catches it and names the override."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(compose_with([*SMOKE, "metrics.feature_metrics=[fd,kidd]"]))
    assert_validator_message(info.value, "metrics.feature_metrics", "kid", "command-line override "
                                                                            "'metrics.feature_metrics=[fd,kidd]'")
    assert "did you mean 'kid'" in str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_typo_as_plus_addition(case):
    _, _, _, plus, bad_key, valid_key = CASES[case]
    cfg = compose_with([*SMOKE, plus])  # Hydra accepts it, even on typed nodes
    with pytest.raises(ConfigError) as info:
        validate_run_config(cfg)
    assert_validator_message(info.value, bad_key, valid_key, f"command-line override '{plus}'")


def test_outside_a_hydra_app_the_group_is_named():
    with pytest.raises(ConfigError, match=r"(?s)'data\.imag_size'; did you mean 'image_size'.*from: config group "
                                          r"'data'"):
        validate_run_config(compose_config([*SMOKE, "+data.imag_size=32"]))


def test_refused_and_misplaced_keys():
    """Keys the run sets itself, and a metric listed under the wrong kind, are named with the reason."""
    cfg = compose_with([*SMOKE, "+gan.image_size=16", "metrics.feature_metrics=[fd,delentropy]",
                        "downstream.task=segmentaton", "metrics.extractors=[{name: random_cnn, seed: 3}, "
                                                       "{name: random_cnnn}]"])
    with pytest.raises(ConfigError) as info:
        validate_run_config(cfg)
    msg = str(info.value)
    assert "5 problems" in msg, msg
    assert "'gan.image_size' (the run sets it from the dataset)" in msg
    assert "'metrics.extractors[0].seed' (the run passes it to every extractor" in msg
    assert "'delentropy' in 'metrics.feature_metrics'" in msg and "list it in metrics.image_metrics" in msg
    assert "unknown task 'segmentaton'" in msg and "did you mean 'segmentation'" in msg
    assert "unknown extractor 'random_cnnn'" in msg and "did you mean 'random_cnn'" in msg


def test_downstream_values_are_checked_by_its_settings():
    with pytest.raises(ConfigError, match=r"downstream.optimizer='adm'"):
        validate_run_config(compose_with([*SMOKE, "downstream.optimizer=adm"]))


def test_evaluate_folder_config(tmp_path):
    cfg = compose_with([f"folder={tmp_path}"], config_name="evaluate_folder")
    validate_evaluate_folder_config(cfg)
    cfg = compose_with([f"folder={tmp_path}", "+metrics.options.kk=3", "+data.imag_size=32"],
                       config_name="evaluate_folder")
    with pytest.raises(ConfigError) as info:
        validate_evaluate_folder_config(cfg)
    assert "'metrics.options.kk'" in str(info.value) and "'data.imag_size'" in str(info.value)


# --- no false positives ----------------------------------------------------------------------------------------
def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


SHIPPED = ([[f"gan={o}"] for o in _options("gan")] + [[f"metrics={o}"] for o in _options("metrics")]
           + [[f"downstream={o}"] for o in _options("downstream")] + [[f"train={o}"] for o in _options("train")]
           + [[f"dataset={o}"] for o in _options("dataset")] + [["experiment=quickstart"]])


@pytest.mark.parametrize("overrides", SHIPPED, ids=lambda o: o[0])
def test_shipped_configs_pass(overrides):
    validate_run_config(compose_with(overrides))


@pytest.mark.parametrize("sweep", _options("sweep"))
def test_shipped_sweeps_pass_with_their_first_values(sweep):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = compose_with([f"+sweep={sweep}"]).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={values}" for key, values in params.items()])
    # grid sweeps (a,b,c) and Optuna choices (choice(a,b)) alike: the first value of each key
    first = [f"{o.get_key_element()}="
             + (next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str())
             for o in parsed]
    validate_run_config(compose_with([f"+sweep={sweep}", *first]))


# --- the real CLI ----------------------------------------------------------------------------------------------
def test_cli_fails_before_any_training(tmp_path):
    run_py = (REPO / "benchmark" / "run.py").read_text()
    assert "validate_run_config" in run_py, "benchmark/run.py must call validate_run_config(cfg) first in execute_run"
    results = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "train", *SMOKE, "+data.imag_size=32",
                           f"paths.results_dir={results}"], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "'data.imag_size'; did you mean 'image_size'" in out, out
    assert "valid keys of data:" in out and "command-line override '+data.imag_size=32'" in out, out
    assert not list(results.rglob("checkpoints/*")), "a training step ran"
    assert not list(results.rglob("*.pt")), "a checkpoint was written"


def test_cli_evaluate_folder_fails_before_reading_images(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "typo.yaml").write_text("defaults: [smoke, _self_]\noptions:\n  kk: 3\n")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "evaluate-folder", "--config-dir", str(tmp_path),
                           f"folder={tmp_path / 'no_such_folder'}", "metrics=typo", f"paths.results_dir={results}"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "'metrics.options.kk'; did you mean 'k'" in out and "valid keys of metrics.options:" in out, out
    assert f"from: {tmp_path / 'metrics' / 'typo.yaml'} (config group option metrics=typo)" in out, out
    assert "not a folder of images" not in out  # validation came first
    assert not (results / "store").exists()


def test_cli_typo_in_a_typed_group_yaml_lists_the_valid_keys(tmp_path):
    """Hydra itself refuses a misspelt key of a typed group (data, dataset, train) while composing and names the
    file; the CLI adds the valid keys and the closest match."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("defaults: [default, _self_]\nimag_size: 32\n")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "train", "--multirun", "--config-dir", str(tmp_path),
                           "data=mine", "seed=0,1", f"paths.results_dir={results}"], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=False,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "In 'data/mine'" in out and "unknown key 'data.imag_size'. Did you mean 'image_size'?" in out, out
    assert "Valid keys of data: color," in out, out
    assert not list(results.rglob("*.pt"))

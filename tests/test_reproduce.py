"""The reproduction entries (experiment=reproduce_<paper>, scale=smoke|paper): every sweep job composes and passes the
config validation at both scales, the smoke scale is CPU-sized, the paper scale carries the papers' values, and
scripts/reproduce.sh refuses clearly when its data are absent. The reproductions themselves are not run here."""
from __future__ import annotations

import itertools
import math
import os
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from medsynbench.benchmark.config import register_configs
from medsynbench.benchmark.validate import ConfigError, validate_run_config
from tests.conftest import CONF_DIR, REPO

PAPERS = ("empirical", "delentropy", "dermatology", "medigan")
SCALES = ("smoke", "paper")


def _compose(overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _sweep(cfg) -> dict[str, list[str]]:
    """The experiment's hydra.sweeper.params as {key: [values as override strings]}."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) or {}
    parser = OverridesParser.create()
    out = {}
    for key, value in params.items():
        override = parser.parse_overrides([f"{key}={value}"])[0]
        out[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
    return out


def _jobs(sweep: dict[str, list[str]]) -> list[list[str]]:
    """Every value of every swept key at least once (one key at a time, the others at their first value)."""
    base = {k: v[0] for k, v in sweep.items()}
    jobs = [[f"{k}={v}" for k, v in base.items()]]
    for key, values in sweep.items():
        for value in values[1:]:
            jobs.append([f"{k}={value if k == key else v}" for k, v in base.items()])
    return jobs


@pytest.fixture(scope="module")
def entries():
    """{(paper, scale): (composed config with its hydra node, sweep params, composed jobs)}."""
    out = {}
    for paper, scale in itertools.product(PAPERS, SCALES):
        head = [f"experiment=reproduce_{paper}", f"scale={scale}"]
        cfg = _compose(head)
        sweep = _sweep(cfg)
        jobs = [_compose([*head, *job]) for job in _jobs(sweep)]
        out[paper, scale] = (cfg, sweep, jobs)
    return out


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("paper", PAPERS)
def test_every_sweep_job_composes_and_validates(entries, paper, scale):
    cfg, sweep, jobs = entries[paper, scale]
    assert cfg.experiment_name == f"reproduce-{paper}-{scale}"
    assert cfg.hydra.runtime.choices["scale"] == scale and cfg.hydra.runtime.choices[f"scale/{paper}"] == scale
    assert sweep, "a reproduction is a sweep: hydra.sweeper.params must not be empty"
    for job in jobs:
        validate_run_config(job)            # raises ConfigError naming the key
        assert job.experiment_name == cfg.experiment_name


def test_validation_still_catches_a_misspelt_key_in_a_reproduction():
    with pytest.raises(ConfigError, match="imag_size"):
        validate_run_config(_compose(["experiment=reproduce_delentropy", "+data.imag_size=32"]))
    with pytest.raises(Exception, match="scale"):     # only smoke and paper exist
        _compose(["experiment=reproduce_delentropy", "scale=huge"])


@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_scale_is_cpu_sized(entries, paper):
    cfg, sweep, jobs = entries[paper, "smoke"]
    n_runs = math.prod(len(v) for v in sweep.values())
    assert n_runs <= 9, sweep
    for job in jobs:
        assert job.data.image_size <= 64
        assert job.train.steps <= 1000 and job.train.batch_size <= 32
        assert job.num_threads == 1          # one thread per run on the shared 2-core CPU
        assert job.n_samples is None         # as many as the real test split
        assert all(e.get("name") not in ("inception_fid",) and ":" not in e.get("name") for e in job.metrics.extractors), \
            "the smoke scale must not need downloaded weights"
        assert not job.metrics.generator_metrics
        ds = OmegaConf.to_container(job.downstream, resolve=True)
        if ds.get("task") not in (None, "none"):
            assert ds["steps"] <= 100 and ds.get("pretrained", False) in (False, None) \
                and ds.get("encoder_weights") is None


def test_empirical_entry_has_table2_rows_and_table1_search(entries):
    for scale in SCALES:
        cfg, sweep, jobs = entries["empirical", scale]
        assert list(cfg.downstream.train_on) == ["real", "real_augmented", "synthetic", "real+synthetic"]
        assert cfg.downstream.task == "segmentation"
        gans = set(sweep["gan"])
        assert {"dcgan", "lsgan", "wgan", "hinge"} <= gans     # the four GANs of the paper's search
        assert all(len(sweep[k]) >= 2 for k in sweep if k.startswith(("gan.", "train.")))   # configurations per GAN
    _, sweep, jobs = entries["empirical", "smoke"]
    assert all(j.dataset.task == "segmentation" for j in jobs) and len(sweep["gan"]) >= 3
    cfg, sweep, jobs = entries["empirical", "paper"]
    assert sweep["dataset"] == ["acdc"]
    assert sweep["gan.d_filters"] == ["16", "32", "64", "128"]                   # Table 1 / Fig. 4
    assert [float(v) for v in sweep["train.lr_g"]] == [4e-5, 5e-5, 1e-4, 2e-4, 1e-3]          # Table 1
    assert cfg.downstream.synthetic_n == 10000 and cfg.n_samples == 10000      # "10,000 images" per GAN
    assert all(j.train.lr_d == j.train.lr_g for j in jobs)


def test_delentropy_entry_sweeps_training_set_sizes(entries):
    _, sweep, jobs = entries["delentropy", "smoke"]
    sizes = [int(v) for v in sweep["data.train_size"]]
    assert len(sizes) >= 3 and sizes == sorted(sizes) and len(sweep["seed"]) >= 2
    assert all(j.dataset.root.endswith("kvasir-seg-256") for j in jobs)        # a real dataset from ../shared/data
    cfg, sweep, jobs = entries["delentropy", "paper"]
    assert sweep["data.train_size"] == ["500", "1000", "2500"]
    assert set(sweep["dataset"]) == {"kvasir", "isic2018", "kermany"}
    assert set(sweep["gan"]) == {"stylegan2_full", "spade"}
    assert cfg.data.image_size == 512
    for scale in SCALES:
        cfg = entries["delentropy", scale][0]
        assert "delentropy" in cfg.metrics.image_metrics and "fd" in cfg.metrics.feature_metrics
        assert cfg.downstream.task == "none"


def test_dermatology_entry_compares_conditional_and_unconditional(entries):
    for scale in SCALES:
        cfg, sweep, jobs = entries["dermatology", scale]
        assert {j.gan.conditional for j in jobs} == {True, False}
        assert {j.gan.name for j in jobs} == {"stylegan2", "stylegan2_cond"}
        assert cfg.dataset.name == "isic2018" and cfg.downstream.task == "classification"
        assert list(cfg.downstream.train_on) == ["real", "real_augmented", "synthetic", "real+synthetic"]
        assert {"fd", "kid", "prdc"} <= set(cfg.metrics.feature_metrics)
    cfg = entries["dermatology", "paper"][0]
    assert cfg.data.image_size == 256 and cfg.downstream.model == "efficientnet_b2"
    assert cfg.downstream.lr == 0.0005 and cfg.downstream.epochs == 20 and cfg.downstream.pretrained == "imagenet"
    assert list(cfg.metrics.generator_metrics) == ["ppl"]
    assert cfg.gan.channel_max == 512 and cfg.gan.w_dim == 512                 # StyleGAN2-ADA at full size


def test_medigan_entry_has_backbones_and_normalisations(entries):
    for scale in SCALES:
        cfg, sweep, jobs = entries["medigan", scale]
        assert {"fd", "fd_rr", "r_fd"} <= set(cfg.metrics.feature_metrics)
        assert len(cfg.metrics.extractors) >= 2                                  # several backbones per run
        norm_keys = [k for k in sweep if k.endswith(".normalise")]
        assert norm_keys and all(len(sweep[k]) == 2 for k in norm_keys)
        for job in jobs:                                                          # the swept entry really changes
            for key in norm_keys:
                assert OmegaConf.select(job, key) in sweep[key]
        assert {OmegaConf.select(j, norm_keys[0]) for j in jobs} == set(sweep[norm_keys[0]])
    names = [e.name for e in entries["medigan", "paper"][0].metrics.extractors]
    assert "inception_fid" in names and "timm:inception_v3" in names               # ImageNet and RadImageNet


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_reproduce_script_refuses_without_its_data(tmp_path):
    out = _script("delentropy", env={"MEDSYNBENCH_SHARED_DATA": str(tmp_path / "absent")})
    assert out.returncode == 3 and "absent does not exist" in out.stderr and "MEDSYNBENCH_SHARED_DATA" in out.stderr
    (tmp_path / "data").mkdir()
    out = _script("empirical", "smoke", env={"MEDSYNBENCH_SHARED_DATA": str(tmp_path / "data")})
    assert out.returncode == 3 and "kvasir-seg-256 is missing" in out.stderr
    out = _script("nosuchpaper")
    assert out.returncode == 2 and "empirical, delentropy, dermatology, medigan" in out.stderr

"""Checkpoints load safely (weights-only, verified, registered GAN classes only) and training survives bad ones:
a malicious pickle is refused before it runs, a truncated or corrupt latest checkpoint is skipped with a warning
that names it, and stale temporaries from a killed writer are removed on relaunch."""
from __future__ import annotations

import builtins
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medsynbench.benchmark.data import load_dataset
from medsynbench.benchmark.reevaluate import load_run
from medsynbench.benchmark.train_loop import StopRequested, train
from medsynbench.gans import build_from_args
from medsynbench.checkpoints import (CheckpointError, CheckpointWarning, checkpoint_path, checkpoint_paths,
                                     latest_valid_checkpoint, load_checkpoint)
from tests.conftest import SMOKE, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


class _WritesAFile:
    """Unpickling this runs ``exec``, which writes ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _run_cfg(tmp_path: Path, *overrides: str):
    return compose_config([*SMOKE, f"paths.results_dir={tmp_path / 'results'}", "train.steps=6",
                           "data.train_size=16", *overrides])


def _train(cfg, run_dir: Path):
    return train(cfg, load_dataset(cfg.dataset, cfg.data), run_dir, CPU)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step smoke run: (run dir, final weights)."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = _run_cfg(tmp)
    result = _train(cfg, tmp / "run")
    OmegaConf.save(cfg, tmp / "run" / "config.yaml")  # as benchmark.run writes it: load_run reads it
    return tmp / "run", {k: v.clone() for k, v in result.gan.state_dict().items()}


def _malicious_run_dir(tmp_path: Path, reference_run: Path, marker: Path) -> Path:
    """A copy of a real run directory whose latest checkpoint is a hostile pickle."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    latest = checkpoint_paths(run_dir)[-1]
    ckpt = load_checkpoint(latest)
    ckpt["state_dict"] = {**ckpt["state_dict"], "payload": _WritesAFile(marker)}
    torch.save(ckpt, latest)
    return run_dir


def test_malicious_pickle_is_refused_naming_the_file_and_never_runs(tmp_path, reference):
    marker = tmp_path / "pwned.txt"
    run_dir = _malicious_run_dir(tmp_path, reference[0], marker)
    bad = checkpoint_paths(run_dir)[-1]

    with pytest.raises(CheckpointError, match="unsafe pickle") as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value) and info.value.path == bad
    # the explicit checkpoint of load_run (evaluation of a given step) is refused the same way
    with pytest.raises(CheckpointError, match=bad.name):
        load_run(run_dir, CPU, checkpoint=bad)
    # without an explicit checkpoint: skipped with a warning naming it, the previous valid one is used
    with pytest.warns(CheckpointWarning, match=bad.name):
        _, _, used = load_run(run_dir, CPU)
    assert used == checkpoint_paths(run_dir)[-2]
    # only the hostile checkpoint left: a clear error naming it
    for other in checkpoint_paths(run_dir)[:-1]:
        other.unlink()
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match=bad.name):
        load_run(run_dir, CPU)
    assert not marker.exists(), "the checkpoint's pickle ran"

    # the payload is real: an unsafe load would have written the file
    torch.load(bad, weights_only=False)
    assert marker.read_text() == "pwned"


def test_unregistered_gan_target_is_refused_and_nothing_is_called(tmp_path, reference):
    marker = tmp_path / "pwned.txt"
    for target in ("os.system", "builtins.exec", "torch.nn.Linear", "medsynbench.gans.nope.Missing"):
        with pytest.raises(ValueError, match="not a registered GAN class"):
            build_from_args({"_target_": target, "command": f"touch {marker}"})
    # a weights-only-safe checkpoint whose model_args name os.system: load_run refuses to build it
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    latest = checkpoint_paths(run_dir)[-1]
    ckpt = load_checkpoint(latest)
    ckpt["model_args"] = {"_target_": "os.system", "command": f"touch {marker}"}
    torch.save(ckpt, latest)
    with pytest.raises(CheckpointError, match=f"{latest.name}.*not a registered GAN class"):
        load_run(run_dir, CPU)
    assert not marker.exists()
    # old checkpoints name the class by module path; registry names work too
    args = load_checkpoint(checkpoint_paths(reference[0])[-1])["model_args"]
    assert args["_target_"] == "medsynbench.gans.dcgan.DCGAN"
    assert type(build_from_args(args)).__name__ == "DCGAN"
    assert type(build_from_args({**args, "_target_": "dcgan"})).__name__ == "DCGAN"


def test_load_checkpoint_verifies_content_and_names_the_problem(tmp_path, reference):
    good = checkpoint_paths(reference[0])[-1]
    ckpt = load_checkpoint(good, resume=True)
    assert ckpt["step"] == 6 and isinstance(ckpt["rng"]["torch"], torch.Tensor)

    truncated = tmp_path / "step_0000006.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"step_0000006\.pt: unreadable \(truncated or corrupt"):
        load_checkpoint(truncated)

    empty = tmp_path / "step_0000007.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(empty)

    renamed = tmp_path / "step_0000002.pt"
    shutil.copy(good, renamed)
    with pytest.raises(CheckpointError, match="holds step 6 but its name says step 2"):
        load_checkpoint(renamed)

    partial = tmp_path / "partial" / "step_0000006.pt"
    partial.parent.mkdir()
    torch.save({"step": 6, "model_args": ckpt["model_args"]}, partial)
    with pytest.raises(CheckpointError, match="missing key 'state_dict'"):
        load_checkpoint(partial)
    torch.save({k: v for k, v in ckpt.items() if k != "rng"}, partial)
    load_checkpoint(partial)  # enough to evaluate ...
    with pytest.raises(CheckpointError, match="missing key 'rng'"):
        load_checkpoint(partial, resume=True)  # ... not to resume


def test_truncated_latest_checkpoint_falls_back_and_stale_temporaries_go(tmp_path, reference):
    cfg = _run_cfg(tmp_path, "train.stop_after=5")
    run_dir = tmp_path / "run"
    with pytest.raises(StopRequested):
        _train(cfg, run_dir)  # killed after step 5: checkpoints of steps 2 and 4
    latest = checkpoint_path(run_dir, 4)
    assert checkpoint_paths(run_dir) == [checkpoint_path(run_dir, 2), latest]
    latest.write_bytes(latest.read_bytes()[:4096])  # truncated, as by a disk full or a copy cut short
    # what a writer killed mid-write leaves behind (atomic_write's hidden temporaries, several MB)
    stale = [run_dir / "checkpoints" / ".step_0000006.pt.k1ll3d.tmp", run_dir / "samples" / ".step_0000006.png.x.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * (3 << 20))

    with pytest.warns(CheckpointWarning, match=r"step_0000004\.pt") as record:
        result = _train(_run_cfg(tmp_path), run_dir)
    assert any("truncated or corrupt" in str(w.message) for w in record)
    assert result.resumed_from == 2 and result.status == "completed"
    assert not any(p.exists() for p in stale)
    assert not list(run_dir.rglob("*.tmp"))
    _same_weights(reference[1], result.gan.state_dict())
    assert latest_valid_checkpoint(run_dir)[0] == checkpoint_path(run_dir, 6)


def test_all_checkpoints_corrupt_starts_fresh_with_a_warning(tmp_path, reference):
    cfg = _run_cfg(tmp_path, "train.stop_after=5")
    run_dir = tmp_path / "run"
    with pytest.raises(StopRequested):
        _train(cfg, run_dir)
    checkpoint_path(run_dir, 2).write_bytes(b"not a checkpoint at all")
    checkpoint_path(run_dir, 4).write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _train(_run_cfg(tmp_path), run_dir)
    messages = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert any("step_0000002.pt" in m for m in messages) and any("step_0000004.pt" in m for m in messages)
    assert any("starting training from scratch" in m for m in messages)
    assert result.resumed_from is None and result.status == "completed"
    _same_weights(reference[1], result.gan.state_dict())


def test_checkpoints_hold_only_weights_only_values(reference):
    """Every checkpoint the loop writes loads with weights_only=True (RNG states included), and nothing else."""
    for path in checkpoint_paths(reference[0]):
        ckpt = torch.load(path, weights_only=True)
        assert set(ckpt) >= {"step", "model_args", "state_dict", "optimizers", "rng", "losses"}
        assert isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """Results, packages and caches are shared with a team: an atomically written file is readable like one written
    by open() under the same umask (mkstemp alone would leave it 0600)."""
    import os
    import stat

    from medsynbench.io import atomic_write_bytes

    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    (tmp_path / "plain.bin").write_bytes(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)  # 0644 under umask 022, not 0600

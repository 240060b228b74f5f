"""Crash consistency: ``kill -9`` at random moments and at the dangerous ones (mid checkpoint write, between the
store record and the run's own copy, mid record write), then the same command again. Every time the run must end
with the weights and metrics of an uninterrupted run, exactly one record, and no partial temporary file."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medsynbench.benchmark.store import load_records
from tests.conftest import REPO, SMOKE

ARGS = [sys.executable, "-m", "benchmark", "train", *SMOKE, "train.steps=12", "train.checkpoint_every=3",
        "train.sample_every=3", "data.train_size=16", "downstream.steps=4", "metrics.options.bootstrap=5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(results: Path, crash_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**ENV, "MEDSYNBENCH_CRASH_AT": crash_at} if crash_at else ENV
    return subprocess.run([*ARGS, f"paths.results_dir={results}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _state(results: Path) -> tuple[dict, dict]:
    """(final weights, {metric: value}) of the only run under ``results``; asserts one record, no temporaries."""
    temporaries = [p for p in results.rglob("*.tmp")]
    assert not temporaries, f"partial files left behind: {temporaries}"
    records = load_records(results / "store")
    assert len(records) == 1, [r["record_id"] for r in records]
    assert len(list((results / "store" / "records").glob("*.json"))) == 1
    (record,) = records
    assert record["status"] == "completed"
    (run_dir,) = (results / "runs").iterdir()
    final = run_dir / "checkpoints" / "step_0000012.pt"
    weights = torch.load(final, map_location="cpu", weights_only=True)["state_dict"]
    own = json.loads((run_dir / "evaluations" / record["evaluation_id"] / "record.json").read_text())
    assert own["record_id"] == record["record_id"]
    values = {m["metric"]: m["value"] for m in record["metrics"]}
    values.update({f"{d['metric']}@{d['train_on']}": d["value"] for d in record["downstream"] if not d.get("skipped")})
    return weights, values


def _assert_same(reference, got, label):
    ref_w, ref_v = reference
    w, v = got
    assert ref_w.keys() == w.keys(), label
    for key in ref_w:
        assert torch.equal(ref_w[key], w[key]), f"{label}: weight {key} differs"
    assert v == ref_v, f"{label}: metrics differ"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    results = tmp_path_factory.mktemp("reference")
    t0 = time.perf_counter()
    out = _launch(results)
    assert out.returncode == 0, out.stderr[-3000:]
    return _state(results), time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [
    "write:step_0000006.pt",      # mid checkpoint write: the temp file is complete, not yet renamed
    "write:training.json",        # training done, its marker not yet in place
    "write:*--e*.json",           # mid store-record write
    "after_store_record",         # between the store record and the run's own record.json
    "write:record.json",          # mid write of the run's own record.json
])
def test_targeted_kill_then_relaunch(reference, tmp_path, crash_at):
    killed = _launch(tmp_path, crash_at)
    assert killed.returncode == -9, f"the crash point {crash_at!r} was never reached: {killed.stderr[-2000:]}"
    again = _launch(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same(reference[0], _state(tmp_path), crash_at)


@pytest.mark.slow
def test_random_kills_then_relaunch(reference, tmp_path):
    """Four kills at seeded random moments of one launch each (start-up, training, checkpoint writes, evaluation,
    record writing), each followed by a clean relaunch."""
    rng = random.Random(7)
    duration = reference[1]
    for i in range(4):
        results = tmp_path / f"kill{i}"
        delay = rng.uniform(0.15, 0.95) * duration
        proc = subprocess.Popen([*ARGS, f"paths.results_dir={results}"], cwd=REPO, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        again = _launch(results)
        assert again.returncode == 0, again.stderr[-3000:]
        _assert_same(reference[0], _state(results), f"kill after {delay:.2f}s")

"""Sweep status and idempotence: `medsynbench status` on a sweep directory, a killed joblib sweep relaunched (only the
missing runs train), failed runs skipped unless retry_failed=true, running runs seen through their lock or heartbeat."""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medsynbench.benchmark.run import execute_run
from medsynbench.benchmark.status import (
    HEARTBEAT_FILE,
    Heartbeat,
    classify_run,
    experiment_status,
    format_report,
    sweep_status,
)
from medsynbench.benchmark.store import load_records, read_record
from tests.conftest import REPO, SMOKE

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
N_RUNS = 8


def _sweep_args(results: Path) -> list[str]:
    smoke = [o for o in SMOKE if not o.startswith("downstream=")]
    return [sys.executable, "-m", "benchmark", "train", "--multirun", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "num_threads=1", *smoke, "downstream=none", "seed=0,1,2,3",
            "data.train_size=16,24", f"paths.results_dir={results}", f"hydra.sweep.dir={results / 'sweep'}"]


def _records(results: Path) -> dict:
    folder = results / "store" / "records"
    return {r["record_id"]: r for r in load_records(results / "store")} if folder.is_dir() else {}


def _ckpt_state(run_dir: str) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (Path(run_dir) / "checkpoints").glob("*.pt")}


def _status_cli(sweep_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmark", "status", f"sweep_dir={sweep_dir}", "format=json"],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.slow
def test_killed_sweep_relaunched_trains_only_the_missing_runs(tmp_path):
    results = tmp_path / "results"
    sweep = subprocess.Popen(_sweep_args(results), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill the whole sweep (launcher and its joblib workers) once some runs are recorded
        deadline = time.monotonic() + 240
        while len(list((results / "store" / "records").glob("*.json"))) < 2:
            assert sweep.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no record within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    time.sleep(0.5)  # the workers die with their process group
    before = _records(results)
    assert 2 <= len(before) < N_RUNS and all(r["status"] == "completed" for r in before.values())
    ckpts_before = {rid: _ckpt_state(r["run_dir"]) for rid, r in before.items()}

    status = _status_cli(results / "sweep")
    counts = status["counts"]
    assert status["planned"] == N_RUNS and len(status["runs"]) == N_RUNS
    assert counts["done"] == len(before) < N_RUNS
    assert counts["pending"] + counts["interrupted"] == N_RUNS - len(before) > 0
    assert counts["running"] == counts["failed"] == counts["invalid"] == 0  # killed: no lock, heartbeats of dead pids
    done_ids = {(r["training_id"], r["evaluation_id"]) for r in status["runs"] if r["state"] == "done"}
    assert done_ids == {(r["training_id"], r["evaluation_id"]) for r in before.values()}

    trained_before = {r["training_id"] for r in status["runs"]
                      if (results / "runs" / r["training_id"] / "training.json").is_file()}
    t_relaunch = datetime.datetime.now(datetime.timezone.utc)
    again = subprocess.run(_sweep_args(results), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _records(results)
    assert len(after) == N_RUNS and all(r["status"] == "completed" for r in after.values())
    for rid, rec in before.items():  # not trained, evaluated or recorded again
        assert after[rid]["recorded_at"] == rec["recorded_at"], rid
        assert _ckpt_state(rec["run_dir"]) == ckpts_before[rid], rid
    new = {rid: r for rid, r in after.items() if rid not in before}
    assert len(new) == N_RUNS - len(before)
    for rec in new.values():  # the missing ones ran now: trained (from scratch or resumed), then evaluated
        assert datetime.datetime.fromisoformat(rec["recorded_at"]) > t_relaunch and rec["steps_done"] == 4
        assert rec["evaluation_only"] is (rec["training_id"] in trained_before)  # killed after training: evaluate
    assert not list((results / "runs").glob(f"*/{HEARTBEAT_FILE}"))  # every finished run removed its heartbeat

    final = sweep_status(results / "sweep")
    assert final["counts"]["done"] == N_RUNS and final["counts"]["pending"] == final["counts"]["interrupted"] == 0
    assert f"done {N_RUNS}" in format_report(final)


def test_failed_run_is_skipped_on_relaunch_unless_retry_failed(smoke_cfg, capsys, monkeypatch):
    import medsynbench.benchmark.evaluate as bench_evaluate

    # (1) failed after the data loaded (here: in evaluation), recorded under (training id, evaluation id)
    calls = []

    def broken_evaluation(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("the metric server is down")

    real_evaluation = bench_evaluate.evaluate_gan
    monkeypatch.setattr(bench_evaluate, "evaluate_gan", broken_evaluation)
    cfg = smoke_cfg("data.train_size=16", "downstream=none")
    failed = execute_run(cfg, raise_on_failure=False)
    assert failed["status"] == "failed" and "metric server" in failed["error"] and len(calls) == 1
    store, runs = cfg.paths.store_dir, cfg.paths.runs_dir
    tid, eid = failed["training_id"], failed["evaluation_id"]
    state = classify_run(store, runs, tid, eid)
    assert state["state"] == "failed" and "metric server" in state["error"]

    capsys.readouterr()
    skipped = execute_run(cfg, raise_on_failure=False)  # a relaunch: skipped, record unchanged
    assert len(calls) == 1 and skipped["recorded_at"] == failed["recorded_at"]
    assert read_record(store, tid, eid)["recorded_at"] == failed["recorded_at"]
    out = capsys.readouterr().out
    assert "failed before: RuntimeError: the metric server is down" in out and "retry_failed=true" in out
    with pytest.raises(RuntimeError, match="retry_failed=true"):  # a single run says so with an error
        execute_run(cfg)
    assert len(calls) == 1

    monkeypatch.setattr(bench_evaluate, "evaluate_gan", real_evaluation)
    retried = execute_run(smoke_cfg("data.train_size=16", "downstream=none", "retry_failed=true"))
    assert retried["status"] == "completed" and (retried["training_id"], retried["evaluation_id"]) == (tid, eid)
    assert retried["evaluation_only"] is True  # the training had finished: only the evaluation ran again
    assert classify_run(store, runs, tid, eid)["state"] == "done"

    # (2) failed before the data loaded (train_size larger than the split): the config-only id's record
    bad = smoke_cfg("data.train_size=100000")
    first = execute_run(bad, raise_on_failure=False)
    assert first["status"] == "failed" and "nodata" in first["training_id"]
    again = execute_run(bad, raise_on_failure=False)
    assert again["recorded_at"] == first["recorded_at"]
    assert read_record(store, first["training_id"], first["evaluation_id"])["recorded_at"] == first["recorded_at"]
    assert "failed before" in capsys.readouterr().out
    with pytest.raises(Exception, match="100000"):  # a single run raises the load error itself
        execute_run(bad)
    assert read_record(store, first["training_id"], first["evaluation_id"])["recorded_at"] == first["recorded_at"]
    retry = execute_run(smoke_cfg("data.train_size=100000", "retry_failed=true"), raise_on_failure=False)
    assert retry["status"] == "failed" and retry["training_id"] == first["training_id"]
    assert retry["recorded_at"] != first["recorded_at"]  # retried (and failed again)
    assert {r["status"] for r in load_records(store)} == {"completed", "failed"} and len(load_records(store)) == 2


def _fake_run(runs: Path, name: str, experiment: str = "default") -> Path:
    run_dir = runs / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"experiment_name: {experiment}\n")
    return run_dir


def _write_heartbeat(run_dir: Path, host: str, pid: int, age_s: float, step: int = 3) -> None:
    (run_dir / HEARTBEAT_FILE).write_text(json.dumps({"host": host, "pid": pid, "step": step, "phase": "training",
                                                      "time": time.time() - age_s, "evaluation_id": "e1"}))


def test_running_runs_are_seen_through_their_lock_or_heartbeat(tmp_path, monkeypatch):
    store, runs = tmp_path / "store", tmp_path / "runs"
    assert classify_run(store, runs, "r-none", "e1")["state"] == "pending"

    # the run lock held by another process (a relaunch, another sweep on this node)
    locked = _fake_run(runs, "r-locked")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                               f"with FileLock({str(locked / 'run.lock')!r}):\n    print('held', flush=True)\n"
                               "    sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        state = classify_run(store, runs, "r-locked", "e1")
        assert state["state"] == "running" and state["via"] == "lock"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert classify_run(store, runs, "r-locked", "e1")["state"] == "pending"  # released

    # a fresh heartbeat from another node of a shared file system (its lock is invisible from here)
    remote = _fake_run(runs, "r-remote")
    _write_heartbeat(remote, "gpu-node-7", 4242, age_s=5, step=120)
    state = classify_run(store, runs, "r-remote", "e1", timeout_s=120)
    assert state["state"] == "running" and state["via"] == "heartbeat"
    assert (state["host"], state["pid"], state["step"]) == ("gpu-node-7", 4242, 120)
    assert classify_run(store, runs, "r-remote", "e1", timeout_s=2)["state"] == "pending"  # too old: gone

    # a heartbeat left by a killed process of this host (dead pid), with a checkpoint: interrupted, resumable
    killed = _fake_run(runs, "r-killed")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_heartbeat(killed, socket.gethostname(), dead.pid, age_s=1)
    (killed / "checkpoints").mkdir()
    (killed / "checkpoints" / "step_0000002.pt").write_bytes(b"x")
    state = classify_run(store, runs, "r-killed", "e1")
    assert state["state"] == "interrupted" and state["step"] == 2

    # the heartbeat a run writes: now, then every MEDSYNBENCH_HEARTBEAT_S seconds; removed when the run ends
    mine = _fake_run(runs, "r-mine", experiment="exp-a")
    with Heartbeat(mine, "r-mine", "e1", interval=0.1):
        time.sleep(0.3)
        beat = json.loads((mine / HEARTBEAT_FILE).read_text())
        assert beat["pid"] == os.getpid() and beat["host"] == socket.gethostname() and beat["phase"] == "training"
        assert time.time() - beat["time"] < 5
        assert classify_run(store, runs, "r-mine", "e1")["state"] == "running"
        report = experiment_status(store, runs, "exp-a")
        assert report["counts"]["running"] == 1 and report["counts"]["pending"] is None
        assert "unknown without a sweep definition" in format_report(report)
    assert not (mine / HEARTBEAT_FILE).exists()
    assert experiment_status(store, runs, "exp-a")["counts"]["running"] == 0

"""A real one-node SLURM cluster (not a mock): a sweep as a SLURM job array through the submitit launcher
(``hydra/launcher=slurm``), and a preempted run that SLURM requeues and that resumes from its last checkpoint to the
weights of an uninterrupted run.

The session fixture installs ``slurm-wlm`` and ``munge`` (scripts/setup_system.sh, apt) when missing and starts
munged, slurmctld and slurmd (scripts/setup_slurm.sh). The tests skip only where that cannot be done (not root, no
apt-get, an install that fails outside CI), with the reason; in CI (CI=true) as root they never skip.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medsynbench.benchmark.run import execute_run, job_threads
from medsynbench.benchmark.store import load_records
from medsynbench.checkpoints import checkpoint_path, checkpoint_paths, load_checkpoint
from tests.conftest import REPO, SMOKE, compose_config

IN_CI = os.environ.get("CI", "").lower() == "true"
# one CPU and 1 GB per run: two array tasks at once on a 2-core machine, each with one torch thread
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=4"]


def _cannot(reason: str, output: str = ""):
    """Skip with the reason, except in CI as root, where SLURM must be available: there it fails."""
    if IN_CI and os.geteuid() == 0:
        pytest.fail(f"CI as root, yet {reason}\n{output[-3000:]}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("SLURM tests need root (scripts/setup_system.sh installs slurm-wlm/munge with apt, "
                    "scripts/setup_slurm.sh starts the daemons); run as root, as CI does")
    if not shutil.which("slurmctld"):
        if not shutil.which("apt-get"):
            _cannot("slurm-wlm is not installed and apt-get is not available to install it")
        setup = subprocess.run(["bash", str(REPO / "scripts/setup_system.sh")], capture_output=True, text=True,
                               timeout=900)
        if setup.returncode != 0 or not shutil.which("slurmctld"):
            _cannot("apt-get could not install slurm-wlm and munge (scripts/setup_system.sh)",
                    setup.stdout + setup.stderr)
    start = subprocess.run(["bash", str(REPO / "scripts/setup_slurm.sh")], capture_output=True, text=True,
                           timeout=300)
    assert start.returncode == 0, f"scripts/setup_slurm.sh failed:\n{start.stdout}\n{start.stderr}"
    info = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %c"], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and info.stdout.strip(), info.stderr
    host = subprocess.run(["srun", "-N1", "-n1", "-t", "1", "hostname"], capture_output=True, text=True, timeout=120)
    assert host.returncode == 0 and host.stdout.strip(), f"srun hostname failed: {host.stderr}"
    return info.stdout.split()[0]


def _train(*args: str, wait: bool = True, timeout: int = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmark", "train", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _scontrol_jobs(job_id: str) -> list[dict[str, str]]:
    """``scontrol show job`` of a job (all tasks of an array), one dict per job; jobs stay listed MinJobAge (600 s)
    after they end."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]


def _ended(job_id: str, timeout: float = 60) -> list[dict[str, str]]:
    """The jobs of ``job_id`` once none is still running (the launcher returns as soon as each run's result file is
    written, a moment before SLURM marks the task COMPLETED)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = _scontrol_jobs(job_id)
        if time.monotonic() > deadline or all(j["JobState"] not in ("RUNNING", "COMPLETING", "PENDING") for j in jobs):
            return jobs
        time.sleep(0.2)


def _submitit_dir(results: Path) -> Path:
    (folder,) = (results / "hydra" / "multirun").glob("*/*/.submitit")
    return folder


@pytest.mark.slurm
def test_sweep_runs_as_a_slurm_array_one_record_per_run(slurm_cluster, tmp_path):
    results = tmp_path / "results"
    t0 = time.perf_counter()
    run = _train("--multirun", *LAUNCHER, *SMOKE, "downstream=none", "seed=0,1", "data.train_size=16,24",
                 f"paths.results_dir={results}")
    elapsed = time.perf_counter() - t0
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    records = load_records(results / "store")
    assert len(records) == 4
    assert {(r["train_size"], r["seed"]) for r in records} == {(16, 0), (16, 1), (24, 0), (24, 1)}
    assert all(r["status"] == "completed" for r in records)

    # one SLURM job array of 4 tasks, each COMPLETED on this cluster's node, according to slurmctld itself
    folder = _submitit_dir(results)
    (script,) = folder.glob("*/*_submission.sh")
    assert "#SBATCH --array=0-3%4" in script.read_text() and "#SBATCH --cpus-per-task=1" in script.read_text()
    array_id = script.parent.name
    jobs = _ended(array_id)
    assert sorted(int(j["ArrayTaskId"]) for j in jobs) == [0, 1, 2, 3]
    assert all(j["ArrayJobId"] == array_id and j["JobState"] == "COMPLETED" for j in jobs), jobs
    assert {j["NodeList"] for j in jobs} == {slurm_cluster}

    # each task's log (written by SLURM under the array task's id) names the run it recorded, trained with the one
    # thread the task was given (SLURM_CPUS_PER_TASK=1)
    logged = {}
    for task in range(4):
        out = (folder / f"{array_id}_{task}" / f"{array_id}_{task}_0_log.out").read_text()
        err = (folder / f"{array_id}_{task}" / f"{array_id}_{task}_0_log.err").read_text()
        assert f"JobEnvironment(job_id={array_id}_{task}" in out + err
        assert "torch threads: 1" in out + err
        (run_id,) = re.findall(r"\[medsynbench\] (\S+): completed", out)
        logged[run_id] = task
    assert set(logged) == {r["training_id"] for r in records}
    print(f"SLURM array of 4 runs: {elapsed:.1f} s")


@pytest.mark.slurm
def test_preempted_run_is_requeued_and_resumes_to_the_uninterrupted_weights(slurm_cluster, tmp_path):
    """USR2 is what SLURM sends at preemption or near the time limit (submitit's --signal); submitit requeues the
    task, which resumes from the run's last checkpoint and ends with the weights of an uninterrupted run."""
    steps, every = 200, 25
    overrides = [*SMOKE, "downstream=none", "seed=0", "data.train_size=16", f"train.steps={steps}",
                 f"train.checkpoint_every={every}", f"train.sample_every={steps}"]
    results = tmp_path / "slurm"
    sweep = _train("--multirun", *LAUNCHER, *overrides, f"paths.results_dir={results}", wait=False)
    try:
        deadline = time.monotonic() + 240
        run_dir = None
        while time.monotonic() < deadline and sweep.poll() is None:
            done = [p for d in (results / "runs").glob("*") for p in checkpoint_paths(d)]
            if done:
                run_dir = done[0].parents[1]
                break
            time.sleep(0.05)
        assert run_dir is not None, "no checkpoint appeared: " + (sweep.stdout.read() if sweep.poll() else "")
        folder = _submitit_dir(results)
        (script,) = folder.glob("*/*_submission.sh")
        job_id = script.parent.name
        (job,) = _scontrol_jobs(job_id)
        assert job["JobState"] == "RUNNING", job
        preempt = subprocess.run(["scancel", "--signal=USR2", job_id], capture_output=True, text=True, timeout=60)
        assert preempt.returncode == 0, preempt.stderr
        at_signal = max(int(p.stem.split("_")[1]) for p in checkpoint_paths(run_dir))

        # SLURM holds a requeued job for ~2 minutes (its BeginTime); the test, as the cluster's admin, releases it now
        while time.monotonic() < deadline:
            (job,) = _scontrol_jobs(job_id)
            if int(job["Restarts"]) >= 1 and job["JobState"] == "PENDING":
                break
            assert sweep.poll() is None, sweep.stdout.read()[-4000:]
            time.sleep(0.2)
        assert int(job["Restarts"]) == 1 and job["JobState"] == "PENDING", job
        release = subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True,
                                 text=True, timeout=60)
        assert release.returncode == 0, release.stderr
        out, _ = sweep.communicate(timeout=max(10.0, deadline - time.monotonic()))
    finally:
        if sweep.poll() is None:
            sweep.kill()
            subprocess.run(["scancel", job_id] if "job_id" in locals() else ["true"], timeout=60)
    assert sweep.returncode == 0, out[-4000:]
    (job,) = _ended(job_id)
    assert job["JobState"] == "COMPLETED" and int(job["Restarts"]) == 1, job
    (record,) = load_records(results / "store")
    assert record["status"] == "completed" and record["steps_done"] == steps
    assert record["resumed_from"] is not None and at_signal <= record["resumed_from"] < steps, \
        (record["resumed_from"], at_signal)  # it was interrupted mid-training, and resumed from a checkpoint
    err = (folder / f"{job_id}" / f"{job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in err and "preempted" in err

    # the same config, uninterrupted, without SLURM, in this process (one thread, as the SLURM task had)
    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    try:
        ref = execute_run(compose_config([*overrides, "num_threads=1", f"paths.results_dir={reference}"]))
    finally:
        torch.set_num_threads(threads)
    assert ref["status"] == "completed" and ref["resumed_from"] is None
    ref_dir = Path(ref["run_dir"])
    assert ref_dir.name == run_dir.name  # same training id: the launcher and the thread count are in neither id
    a = load_checkpoint(checkpoint_path(run_dir, steps))
    b = load_checkpoint(checkpoint_path(ref_dir, steps))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"weights differ after the requeue: {different[:5]}"


def test_threads_follow_the_cpus_the_job_was_given(monkeypatch):
    """num_threads when set; else SLURM_CPUS_PER_TASK; else torch's count capped at the process's CPU affinity."""
    cfg = compose_config(SMOKE)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cfg.num_threads is None
    assert job_threads(compose_config([*SMOKE, "num_threads=3"])) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert job_threads(cfg) == 5
    assert job_threads(compose_config([*SMOKE, "num_threads=3"])) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert job_threads(cfg) == 1

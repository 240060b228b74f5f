"""``medsynbench train federated=<preset>``: partition the dataset into clients, then

- ``mode: flower``: launch a real federation on loopback (one server process + one process per client, talking
  Flower's gRPC protocol) and supervise it: a server or client process that dies is restarted and resumes from the
  last completed round (its checkpoints);
- ``mode: local_only``: each client trains alone on its partition (same steps per client, no averaging);
- ``mode: central``: one model on the union of the partitions, ``clients x local_steps`` steps per round (the
  federation's total compute), evaluated on every client's held-out split.

Every mode writes one results-store record per evaluated round (per-client metrics of each model + their
client-size-weighted aggregate) and ``<run dir>/federated/curves.json``."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from medsynbench.benchmark.federated import core
from medsynbench.benchmark.federated.config import MODES, STRATEGIES
from medsynbench.benchmark.validate import ConfigError
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def check_config(cfg) -> None:
    f = cfg.federated
    if f.mode not in MODES:
        raise ConfigError(f"federated.mode={f.mode!r} is not one of {list(MODES)}")
    if f.strategy not in STRATEGIES:
        raise ConfigError(f"federated.strategy={f.strategy!r} is not one of {list(STRATEGIES)}")
    for key in ("rounds", "local_steps", "eval_every"):
        if int(f[key]) < 1:
            raise ConfigError(f"federated.{key} must be >= 1, got {f[key]}")
    if f.mode == "flower" and not any(f.average.values()):
        raise ConfigError("federated.average: generator, discriminator and ema are all false: nothing to average")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_listening(host: str, port: int, proc, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)


def prepare(cfg, bundle, tid: str, run_dir: Path) -> tuple[Path, dict]:
    """The federation folder: resolved config, the partition (fixed at the first launch) and the plan."""
    from medsynbench.benchmark.federated.partition import make_partition

    fed = core.fed_dir(run_dir)
    fed.mkdir(parents=True, exist_ok=True)
    (fed / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    part = make_partition(bundle, cfg.dataset, cfg.federated.partition)
    plan = {"training_id": tid, "run_dir": str(run_dir), "n_clients": len(part.train),
            "partition": {"by": part.by, "column": part.column,
                          "train": [[bundle.train.ids[i] for i in c] for c in part.train],
                          "test": [[bundle.test.ids[i] for i in c] for c in part.test]},
            "partition_summary": part.describe(bundle)}
    if cfg.federated.mode == "flower":
        import torch
        from medsynbench.benchmark.federated.client import Site

        site = Site(cfg, bundle, core.client_bundle(bundle, [0], [0], 0), [], fed, torch.device("cpu"))
        keys = core.shared_keys(site.gan.state_dict(), cfg.federated.average)
        plan["keys"] = keys
        if not (fed / "initial.pt").is_file():
            core.save_ckpt(fed / "initial.pt", {"round": 0, "keys": keys, "model_args": site.gan.model_args(),
                                                "arrays": [site.gan.state_dict()[k].float().clone() for k in keys]})
    old = fed / "plan.json"
    if old.is_file() and json.loads(old.read_text())["partition"] != plan["partition"]:
        raise RuntimeError(f"{old}: the partition differs from the one this federation started with")
    core.write_json(fed / "plan.json", plan)
    s = plan["partition_summary"]
    log.info("federated %s: %d clients (%s partition%s): %s", cfg.federated.mode, plan["n_clients"], s["by"],
             f", {s['column']}" if s["column"] else "",
             ", ".join(f"c{c['client']} {c['n_train']} train / {c['n_test']} test" for c in s["clients"]))
    return fed, plan


def run_federated(cfg, bundle, tid: str, run_dir: Path, device, raise_on_failure: bool = True) -> dict:
    from medsynbench.benchmark.run import base_record, evaluation_id
    from medsynbench.benchmark.store import read_record, write_record

    check_config(cfg)
    fcfg = cfg.federated
    last_eid = evaluation_id(cfg, step=fcfg.rounds * fcfg.local_steps)
    done = read_record(cfg.paths.store_dir, tid, last_eid) if cfg.evaluate else None
    if done is not None and done.get("status") == "completed":
        log.info("federated run %s: already recorded; nothing to do", tid)
        return done
    t0 = time.perf_counter()
    try:
        fed, plan = prepare(cfg, bundle, tid, run_dir)
        if fcfg.mode == "flower":
            supervise(cfg, fed, plan)
        else:
            run_in_process(cfg, bundle, fed, plan, device)
        write_curves(cfg, tid, fed)
        record = read_record(cfg.paths.store_dir, tid, last_eid)
        if record is None:
            raise RuntimeError(f"federated run {tid}: the last round's record is missing after the federation ended")
    except Exception as err:
        import traceback

        if isinstance(err, ConfigError):
            raise
        record = base_record(cfg, tid, last_eid, run_dir)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        write_record(cfg.paths.store_dir, record)
        if raise_on_failure:
            raise
        return record
    record.setdefault("timings", {})["total_s"] = time.perf_counter() - t0
    return record


# ------------------------------------------------------------------------------------------- Flower processes
class Supervisor:
    """Starts the server and client processes and restarts any that dies (federated.max_restarts each)."""

    def __init__(self, cfg, fed: Path, plan: dict):
        self.cfg, self.fed, self.plan = cfg, fed, plan
        self.host = cfg.federated.address
        self.port = int(cfg.federated.port) or _free_port(self.host)
        self.address = f"{self.host}:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", GRPC_VERBOSITY="ERROR")

    def _spawn(self, name: str) -> None:
        mod = "server" if name == "server" else "client"
        args = [sys.executable, "-m", f"medsynbench.benchmark.federated.{mod}", str(self.fed)]
        args += [self.address] if name == "server" else [name[1:], self.address]
        with open(self.fed / f"{name}.log", "ab") as logf:  # the child keeps its own handle
            self.procs[name] = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        self._write_pids()
        log.info("federated: started %s (pid %d)", name, self.procs[name].pid)

    def _write_pids(self) -> None:
        core.write_json(self.fed / "pids.json", {n: p.pid for n, p in self.procs.items()} | {"address": self.address})

    def _restart(self, name: str, rc) -> None:
        self.restarts[name] = self.restarts.get(name, 0) + 1
        if self.restarts[name] > int(self.cfg.federated.max_restarts):
            raise RuntimeError(f"federated {name} process ended with status {rc} {self.restarts[name]} times; see "
                               f"{self.fed / (name + '.log')}")
        log.warning("federated: %s ended with status %s; restarting it (it resumes from its last completed round)",
                    name, rc)
        self._spawn(name)

    def run(self) -> None:
        clients = [f"c{k}" for k in range(self.plan["n_clients"])]
        try:
            self._spawn("server")
            _wait_listening(self.host, self.port, self.procs["server"])
            for c in clients:
                self._spawn(c)
            while True:
                time.sleep(0.5)
                rc = self.procs["server"].poll()
                if rc == 0 and (self.fed / "server" / "done.json").is_file():
                    break
                if rc is not None:
                    self._restart("server", rc)
                    _wait_listening(self.host, self.port, self.procs["server"])
                    continue
                for c in clients:  # a client that ends while the server still runs was killed or crashed
                    crc = self.procs[c].poll()
                    if crc is not None:
                        self._restart(c, crc)
            for c in clients:  # the server disconnects them at the end
                try:
                    self.procs[c].wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.procs[c].terminate()
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()


def supervise(cfg, fed: Path, plan: dict) -> None:
    Supervisor(cfg, fed, plan).run()


# ------------------------------------------------------------------------------------------- baselines in-process
def run_in_process(cfg, bundle, fed: Path, plan: dict, device) -> None:
    """local_only / central: the same partition, steps and evaluation as the federation, without Flower."""
    from medsynbench.benchmark.federated.client import Site
    from medsynbench.benchmark.run import evaluation_id
    from medsynbench.benchmark.store import read_record

    fcfg = cfg.federated
    part = plan["partition"]
    clients = [core.client_bundle(bundle, core._indices(bundle.train.ids, part["train"][k]),
                                  core._indices(bundle.test.ids, part["test"][k]), k) for k in range(plan["n_clients"])]
    if fcfg.mode == "local_only":
        sites = [Site(cfg, bundle, c, [], fed / "clients" / f"c{c.index}", device) for c in clients]
        steps = int(fcfg.local_steps)
    else:
        sites = [Site(cfg, bundle, core.pooled(bundle, clients), [], fed / "central", device)]
        steps = int(fcfg.central_steps or len(clients) * fcfg.local_steps)
    due = lambda r: r % max(1, fcfg.eval_every) == 0 or r == fcfg.rounds
    for r in range(1, fcfg.rounds + 1):
        recorded = read_record(cfg.paths.store_dir, plan["training_id"], evaluation_id(cfg, step=r * fcfg.local_steps))
        if all(core.round_file(s.folder, r).is_file() for s in sites) and (recorded or not due(r)):
            continue  # a completed round of an earlier attempt
        for s in sites:
            if not core.round_file(s.folder, r).is_file():
                s.train_round(r, steps)
            else:
                s.restore(r)
        if due(r):
            rows = []
            for s in sites:
                if fcfg.mode == "local_only":
                    rows.append(s.evaluate(s.gan, "local", r))
                else:
                    rows += [s.evaluate(s.gan, "central", r, client=c) for c in clients]
            core.write_round_record(cfg, plan["training_id"], Path(plan["run_dir"]), r, rows,
                                    {"partition": plan["partition_summary"], "steps_per_round": steps})
            log.info("round %d: %s", r, ", ".join(f"c{row['client']} {row['model']} fd " + str(next(
                (round(m['value'], 3) for m in row['metrics'] if m['metric'].startswith('fd_')), None)) for row in rows))


def write_curves(cfg, tid: str, fed: Path) -> dict:
    """Per-round, per-client and aggregated metrics of every model, from the store records of this run."""
    from medsynbench.benchmark.store import load_records

    rows = []
    for rec in load_records(cfg.paths.store_dir):
        if rec.get("training_id") != tid or "federated" not in rec:
            continue
        f = rec["federated"]
        for row in f["clients"]:
            for m in row["metrics"]:
                rows.append({"round": f["round"], "step": rec["evaluated_step"], "client": row["client"],
                             "model": row["model"], "n_train": row["n_train"], "metric": m["metric"],
                             "value": m["value"]})
        for model, ms in f["aggregate"].items():
            for m in ms:
                rows.append({"round": f["round"], "step": rec["evaluated_step"], "client": "weighted",
                             "model": model, "metric": m["metric"], "value": m["value"]})
    out = {"training_id": tid, "mode": cfg.federated.mode, "rows": sorted(rows, key=lambda r: (r["round"],
                                                                                              str(r["client"])))}
    core.write_json(fed / "curves.json", out)
    return out

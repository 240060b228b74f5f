"""The federation's server process (``python -m medsynbench.benchmark.federated.server <federation dir>``): a Flower
server on gRPC that runs FedAvg / FedProx / FedAdam over the clients' generator, discriminator and EMA weights.

Resumable: after each round's aggregation it checkpoints the global weights (and the server optimiser's state for
FedAdam) to ``<federation dir>/server/round_NNNN.pt``; a restarted server continues after the last such round. A
round in which a client fails (killed, disconnected) is not aggregated but run again once every client is back, so
no round is lost or half-applied. After each evaluated round it writes the round's record to the results store."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from medsynbench.benchmark.federated import core

log = logging.getLogger("medsynbench.federated.server")


def _ordered(strategy_cls):
    """``strategy_cls`` whose aggregation sees the clients' results sorted by client index. Flower hands them over in
    their order of arrival, and a float32 sum depends on its order (a resumed federation differed from an
    uninterrupted one by ~4e-10): sorted, the aggregate is a pure function of the clients' weights, bit for bit."""

    class Ordered(strategy_cls):
        def aggregate_fit(self, server_round, results, failures):
            results = sorted(results, key=lambda res: int(res[1].metrics["client"]))
            return super().aggregate_fit(server_round, results, failures)

    Ordered.__name__ = Ordered.__qualname__ = f"Ordered{strategy_cls.__name__}"
    return Ordered


def make_strategy(cfg, n: int, arrays: list[np.ndarray], state: dict):
    from flwr.common import ndarrays_to_parameters
    from flwr.server import strategy as flwr_strategy

    FedAdam, FedAvg, FedProx = (_ordered(getattr(flwr_strategy, c)) for c in ("FedAdam", "FedAvg", "FedProx"))
    fcfg = cfg.federated
    common = dict(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n, min_evaluate_clients=n,
                  min_available_clients=n, accept_failures=False,
                  initial_parameters=ndarrays_to_parameters(arrays),
                  on_fit_config_fn=lambda r: {"round": int(r)}, on_evaluate_config_fn=lambda r: {"round": int(r)})
    if fcfg.strategy == "fedavg":
        return FedAvg(**common)
    if fcfg.strategy == "fedprox":
        return FedProx(proximal_mu=float(fcfg.proximal_mu), **common)
    if fcfg.strategy == "fedadam":
        strategy = FedAdam(eta=float(fcfg.server_lr), eta_l=float(cfg.train.lr_g), beta_1=float(fcfg.server_betas[0]),
                           beta_2=float(fcfg.server_betas[1]), tau=float(fcfg.server_tau), **common)
        if state.get("m_t") is not None:  # resume the server optimiser where the last round left it
            strategy.m_t = [t.numpy() for t in state["m_t"]]
            strategy.v_t = [t.numpy() for t in state["v_t"]]
        return strategy
    raise ValueError(f"federated.strategy={fcfg.strategy!r} is not one of fedavg, fedprox, fedadam")


def _server_class():
    from flwr.server import Server

    class FederatedServer(Server):
        """Flower's server with rounds that resume from the last checkpoint and are retried until every client
        answered (see the module docstring)."""

        def __init__(self, cfg, plan, fed: Path, start_round: int, **kw):
            super().__init__(**kw)
            self.cfg, self.plan, self.fed, self.start_round = cfg, plan, fed, start_round

        def _retry(self, what: str, r: int, call, ok):
            for attempt in range(1, 1000):
                res = call()
                if ok(res):
                    return res
                failures = res[2][1] if res else []
                log.warning("round %d %s: %d failure(s) (%s); retrying when every client is back (attempt %d)", r,
                            what, len(failures), "; ".join(str(f)[:120] for f in failures[:3]), attempt)
                time.sleep(1.0)
            raise RuntimeError(f"round {r} {what}: gave up")

        def _complete(self, res) -> bool:
            return (res is not None and res[0] is not None and not res[2][1]
                    and len(res[2][0]) == self.plan["n_clients"])

        def fit(self, num_rounds: int, timeout):
            from flwr.common import parameters_to_ndarrays
            from flwr.server.history import History

            t0 = time.perf_counter()
            self.parameters = self.strategy.initial_parameters
            fcfg = self.cfg.federated
            if self.start_round and not self._recorded(self.start_round) and self._due(self.start_round):
                self._evaluate(self.start_round, timeout)  # killed between checkpoint and record
            for r in range(self.start_round + 1, num_rounds + 1):
                log.info("round %d/%d: fit (%d local steps per client)", r, num_rounds, fcfg.local_steps)
                res = self._retry("fit", r, lambda r=r: self.fit_round(server_round=r, timeout=timeout), self._complete)
                self.parameters = res[0]
                arrays = parameters_to_ndarrays(self.parameters)
                state = {"round": r, "keys": self.plan["keys"], "arrays": [torch.from_numpy(np.asarray(a)) for a in arrays],
                         "fit_metrics": {str(p.cid): dict(f.metrics) for p, f in res[2][0]}}
                if getattr(self.strategy, "m_t", None) is not None:
                    state["m_t"] = [torch.from_numpy(np.asarray(a)) for a in self.strategy.m_t]
                    state["v_t"] = [torch.from_numpy(np.asarray(a)) for a in self.strategy.v_t]
                core.save_ckpt(core.round_file(self.fed / "server", r), state)
                log.info("round %d: global weights checkpointed", r)
                if self._due(r):
                    self._evaluate(r, timeout)
            core.write_json(self.fed / "server" / "done.json", {"rounds": num_rounds})
            return History(), time.perf_counter() - t0

        def _due(self, r: int) -> bool:
            return r % max(1, self.cfg.federated.eval_every) == 0 or r == self.cfg.federated.rounds

        def _recorded(self, r: int) -> bool:
            from medsynbench.benchmark.run import evaluation_id
            from medsynbench.benchmark.store import read_record

            eid = evaluation_id(self.cfg, step=r * self.cfg.federated.local_steps)
            return read_record(self.cfg.paths.store_dir, self.plan["training_id"], eid) is not None

        def _evaluate(self, r: int, timeout) -> None:
            import json

            ok = lambda res: (res is not None and not res[2][1] and len(res[2][0]) == self.plan["n_clients"])
            log.info("round %d: evaluation at every client", r)
            res = self._retry("evaluate", r, lambda: self.evaluate_round(server_round=r, timeout=timeout), ok)
            rows = sorted((row for _, e in res[2][0] for row in json.loads(e.metrics["rows"])),
                          key=lambda row: (row["client"], row["model"]))
            core.write_round_record(self.cfg, self.plan["training_id"], Path(self.plan["run_dir"]), r, rows,
                                    {"partition": self.plan["partition_summary"]})
            for row in rows:
                fd = next((m["value"] for m in row["metrics"] if m["metric"].startswith("fd_")), None)
                log.info("round %d client %d %s model: fd %s", r, row["client"], row["model"], fd)

    return FederatedServer


def main(fed: Path, address: str) -> int:
    from flwr.server import ServerConfig, SimpleClientManager, start_server
    from medsynbench.benchmark.federated.common_proc import setup

    cfg, plan = setup(fed, "server")
    done = core.completed_rounds(fed / "server")
    start = max(done, default=0)
    if start:
        state = core.load_ckpt(core.round_file(fed / "server", start))
        arrays = [t.numpy() for t in state["arrays"]]
        log.info("resuming the federation after round %d (%s)", start, core.round_file(fed / "server", start))
    else:
        state = core.load_ckpt(fed / "initial.pt")
        arrays = [t.numpy() for t in state["arrays"]]
    strategy = make_strategy(cfg, plan["n_clients"], arrays, state)
    server = _server_class()(cfg, plan, fed, start, client_manager=SimpleClientManager(), strategy=strategy)
    start_server(server_address=address, server=server,
                 config=ServerConfig(num_rounds=int(cfg.federated.rounds),
                                     round_timeout=float(cfg.federated.round_timeout_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))

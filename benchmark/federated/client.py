"""One site of the federation (``python -m medsynbench.benchmark.federated.client <federation dir> <k> <address>``):
a Flower client that trains the GAN on its own partition and evaluates on its own held-out split.

Each fit of round r starts from this site's checkpoint of round r-1 (its weights, including what is not averaged,
and its optimiser state, which never leaves the site), takes the global weights the server sent, trains
``federated.local_steps`` steps and checkpoints round r. A client killed at any moment and restarted therefore
continues from its last completed round, and a round that is run again gives the same result."""
from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

import torch
from medsynbench.benchmark.federated import core

log = logging.getLogger("medsynbench.federated.client")


class Site:
    """The model, data and evaluator of one client (also used in-process by the local-only and central baselines)."""

    def __init__(self, cfg, bundle, client: core.ClientData, keys: list[str], folder: Path, device):
        self.cfg, self.bundle, self.client, self.keys, self.folder, self.device = cfg, bundle, client, keys, folder, device
        self.gan, self.opts = core.new_model(cfg, bundle, device)
        self.init = {"state_dict": copy.deepcopy(self.gan.state_dict()),
                     "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in self.opts.items()}}
        self._evaluators: dict[int, core.Evaluator] = {}  # by client index: built once per process, then reused

    def restore(self, r: int) -> None:
        """Weights and optimiser state at the end of round ``r`` (0: the initial state)."""
        state = self.init if r == 0 else core.load_ckpt(core.round_file(self.folder, r))
        self.gan.load_state_dict(state["state_dict"])
        for name, opt in self.opts.items():
            opt.load_state_dict(state["optimizers"][name])

    def train_round(self, r: int, steps: int, global_arrays=None, proximal_mu: float = 0.0) -> dict:
        self.restore(r - 1)
        prox = None
        if global_arrays is not None:
            core.load_arrays(self.gan, self.keys, global_arrays)
            if proximal_mu > 0:
                prox = (proximal_mu, {k: torch.as_tensor(a) for k, a in zip(self.keys, global_arrays)})
        k = max(self.client.index, 0)
        losses = core.train_local(self.cfg, self.gan, self.opts, self.client.train, (r - 1) * steps, steps,
                                  seed=self.cfg.seed * 1000 + k, noise_seed=core.client_seed(self.cfg.seed, k, r),
                                  device=self.device, prox=prox)
        core.save_ckpt(core.round_file(self.folder, r), {
            "round": r, "state_dict": self.gan.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.opts.items()}, "losses": losses})
        return losses

    def evaluator(self, client: core.ClientData) -> core.Evaluator:
        """The metrics on ``client``'s held-out split; extractors and real features are prepared on first use only
        (the central baseline scores one model on every client's split: one evaluator per client, kept)."""
        if client.index not in self._evaluators:
            self._evaluators[client.index] = core.Evaluator(self.cfg, self.bundle, client, self.device)
        return self._evaluators[client.index]

    def evaluate(self, gan, model: str, r: int, client: core.ClientData | None = None) -> dict:
        client = client or self.client
        metrics = self.evaluator(client)(gan)
        return {"client": client.index, "model": model, "round": r, "n_train": len(client.train),
                "n_test": len(client.test), "metrics": metrics}


def clone(gan):
    """A new instance of the same GAN with the same weights (GAN objects rebuild from their model_args)."""
    from medsynbench.gans.base import build_from_args

    out = build_from_args(gan.model_args()).to(next(gan.parameters()).device)
    out.load_state_dict(gan.state_dict())
    return out


def global_model(site: Site, r: int, arrays):
    """The global model of round r as this site sees it: its round-r state with the averaged weights; when the EMA
    is not averaged, the averaged generator is what is sampled."""
    gan = clone(site.gan)
    gan.load_state_dict(core.load_ckpt(core.round_file(site.folder, r))["state_dict"])
    core.load_arrays(gan, site.keys, arrays)
    if not site.cfg.federated.average.ema:
        gan.g_ema.load_state_dict(gan.generator.state_dict())
    return gan


def make_client(site: Site):
    from flwr.client import NumPyClient

    class GANClient(NumPyClient):
        def get_parameters(self, config):
            return core.to_arrays(site.gan.state_dict(), site.keys)

        def fit(self, parameters, config):
            r = int(config["round"])
            log.info("client %d: round %d fit", site.client.index, r)
            losses = site.train_round(r, int(site.cfg.federated.local_steps), parameters,
                                      float(config.get("proximal_mu", 0.0)))
            return (core.to_arrays(site.gan.state_dict(), site.keys), len(site.client.train),
                    {f"loss_{k}": float(v) for k, v in losses.items()} | {"client": site.client.index})

        def evaluate(self, parameters, config):
            r = int(config["round"])
            log.info("client %d: round %d evaluation", site.client.index, r)
            rows = [site.evaluate(global_model(site, r, parameters), "global", r)]
            local = clone(site.gan)
            local.load_state_dict(core.load_ckpt(core.round_file(site.folder, r))["state_dict"])
            rows.append(site.evaluate(local, "local", r))
            fd = next((m["value"] for m in rows[0]["metrics"] if m["metric"].startswith("fd_")), 0.0)
            return float(fd), len(site.client.train), {"rows": json.dumps(rows)}

    return GANClient().to_client()


def load_site(cfg, plan: dict, k: int, fed: Path, device) -> Site:
    from medsynbench.benchmark.data import load_dataset

    bundle = load_dataset(cfg.dataset, cfg.data)
    part = plan["partition"]
    client = core.client_bundle(bundle, core._indices(bundle.train.ids, part["train"][k]),
                                core._indices(bundle.test.ids, part["test"][k]), k)
    return Site(cfg, bundle, client, plan["keys"], fed / "clients" / f"c{k}", device)


def main(fed: Path, k: int, address: str) -> int:
    try:  # flwr >= 1.26 moved the legacy client
        from flwr.client import start_client
    except ImportError:
        from flwr.compat.client.app import start_client

    from medsynbench.benchmark.federated.common_proc import setup
    from medsynbench.benchmark.utils import resolve_device

    cfg, plan = setup(fed, f"client{k}")
    site = load_site(cfg, plan, k, fed, resolve_device(cfg.device))
    log.info("client %d: %d train / %d test images", k, len(site.client.train), len(site.client.test))
    start_client(server_address=address, client=make_client(site), insecure=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))

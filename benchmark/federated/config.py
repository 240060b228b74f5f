"""Schema of the ``federated`` config group (``conf/federated/*.yaml``): the ``federated=`` switch of ``medsynbench
train``. Registered through :class:`benchmark.config.RunConfig` so that a misspelt key fails at compose time."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("none", "flower", "local_only", "central")
STRATEGIES = ("fedavg", "fedprox", "fedadam")
PARTITION_BY = ("auto", "group", "random")
LABEL_MODES = ("keep", "skew")
# Keys that decide where and how the federation runs, not what it computes: in no run id.
RUNTIME_KEYS = ("name", "address", "port", "round_timeout_s", "max_restarts", "eval_every")


@dataclass
class PartitionConfig:
    by: str = "auto"                  # auto: the dataset's patient/site column (group_column/group_pattern), else random | group | random
    ratios: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # relative client sizes; one per client
    labels: str = "keep"              # keep: every client has the pool's class proportions | skew: Dirichlet per class
    skew_alpha: float = 0.5           # labels=skew: Dirichlet concentration (small = strongly skewed)
    seed: int = 0                     # seed of the assignment of patients/images to clients


@dataclass
class AverageConfig:
    generator: bool = True            # average the generator's weights (else each client keeps its own)
    discriminator: bool = True        # average the discriminator's weights
    ema: bool = True                  # average the EMA generator (the one sampled); else each client's EMA is local


@dataclass
class FederatedConfig:
    name: str = "none"                # the preset's name (in no id: its content is)
    mode: str = "none"                # none | flower (a gRPC federation) | local_only | central (baselines)
    strategy: str = "fedavg"          # fedavg | fedprox | fedadam (Flower strategies)
    rounds: int = 10                  # federated rounds
    local_steps: int = 100            # sync interval: generator steps each client trains between two averagings
    central_steps: int | None = None  # mode=central: steps per round; null = clients x local_steps (equal compute)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    average: AverageConfig = field(default_factory=AverageConfig)
    proximal_mu: float = 0.01         # fedprox: weight of the proximal term pulling local weights to the global ones
    server_lr: float = 0.01           # fedadam: server learning rate (eta)
    server_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # fedadam: beta_1, beta_2
    server_tau: float = 1e-3          # fedadam: adaptivity (epsilon) of the server optimiser
    eval_every: int = 1               # evaluate every N rounds (the last round always)
    address: str = "127.0.0.1"        # server address the clients dial (loopback here; a hospital VPN endpoint there)
    port: int = 0                     # 0 = a free port
    round_timeout_s: float = 1800.0   # a round whose clients do not answer in time is retried
    max_restarts: int = 3             # a killed server/client process is restarted this many times


def enabled(cfg) -> bool:
    fed = cfg.get("federated") if hasattr(cfg, "get") else None
    return bool(fed) and fed.get("mode", "none") != "none"

"""What server and clients share: the federation folder's layout, which weights are averaged, one client's data,
its local training for a round, its evaluation on its own held-out split, and the store records of a round."""
from __future__ import annotations

import copy
import json
import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
from omegaconf import OmegaConf

from medsynbench.io import atomic_torch_save, atomic_write_json, stable_hash

log = logging.getLogger(__name__)
PARTS = {"generator": "generator.", "discriminator": "discriminator.", "ema": "g_ema."}
CKPT_RE = re.compile(r"^round_(\d{4,})\.pt$")


# ------------------------------------------------------------------------------------------- folder layout
def fed_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "federated"


def round_file(folder: Path, r: int) -> Path:
    return Path(folder) / f"round_{r:04d}.pt"


def completed_rounds(folder: Path) -> list[int]:
    """Rounds with a checkpoint that loads (a truncated one from a kill is skipped)."""
    out = []
    for p in sorted(Path(folder).glob("round_*.pt")) if Path(folder).is_dir() else []:
        m = CKPT_RE.match(p.name)
        if m:
            try:
                torch.load(p, map_location="cpu", weights_only=True)
                out.append(int(m.group(1)))
            except Exception as err:  # noqa: BLE001
                log.warning("%s: unreadable checkpoint skipped (%s)", p, err)
    return out


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_ckpt(path: Path, obj: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(obj, Path(path))


# ------------------------------------------------------------------------------------------- averaged weights
def shared_keys(state_dict: dict, average) -> list[str]:
    """State-dict keys that the federation averages (generator / discriminator / EMA, each by config), sorted."""
    prefixes = tuple(p for part, p in PARTS.items() if average.get(part, True))
    return sorted(k for k in state_dict if k.startswith(prefixes))


def to_arrays(state_dict: dict, keys: list[str]) -> list[np.ndarray]:
    """float32 arrays for transport (integer buffers too: Flower's averaging multiplies in place)."""
    return [state_dict[k].detach().cpu().to(torch.float32).numpy().copy() for k in keys]


def load_arrays(model: torch.nn.Module, keys: list[str], arrays) -> None:
    state = model.state_dict()
    if len(keys) != len(arrays):
        raise ValueError(f"{len(arrays)} arrays for {len(keys)} averaged tensors")
    with torch.no_grad():
        for k, a in zip(keys, arrays):
            t = torch.as_tensor(np.asarray(a))
            if t.shape != state[k].shape:
                raise ValueError(f"{k}: global shape {tuple(t.shape)} != local {tuple(state[k].shape)}")
            if not state[k].is_floating_point():
                t = t.round()
            state[k].copy_(t.to(state[k].dtype))


# ------------------------------------------------------------------------------------------- client data
@dataclass
class ClientData:
    index: int
    train: ImageSet
    test: ImageSet
    bundle: DatasetBundle        # train / test = this client's; meta with this client's hashes (feature cache keys)


def client_bundle(bundle: DatasetBundle, train_idx, test_idx, k: int) -> ClientData:
    from medsynbench.benchmark.data.loader import content_sha256
    from medsynbench.benchmark.data.splits import ids_sha256

    train, test = bundle.train.subset(list(train_idx)), bundle.test.subset(list(test_idx))
    meta = dict(bundle.meta, counts={"train": len(train), "val": 0, "test": len(test)},
                train_content_sha256=content_sha256(train), test_content_sha256=content_sha256(test),
                train_ids_sha256=ids_sha256(train.ids), test_ids_sha256=ids_sha256(test.ids), client=k)
    return ClientData(k, train, test, replace(bundle, train=train, test=test, val=None, meta=meta))


def pooled(bundle: DatasetBundle, clients: list[ClientData]) -> ClientData:
    """The union of the clients' training data (what central training sees), evaluated nowhere itself."""
    idx = sorted(i for c in clients for i in _indices(bundle.train.ids, c.train.ids))
    return client_bundle(bundle, idx, list(range(len(bundle.test))), -1)


def _indices(all_ids, ids):
    pos = {id_: i for i, id_ in enumerate(all_ids)}
    return [pos[i] for i in ids]


# ------------------------------------------------------------------------------------------- local training
def client_seed(seed: int, client: int, r: int) -> int:
    return int(stable_hash({"seed": seed, "client": client, "round": r}, length=12), 16) % (2 ** 31)


def train_local(cfg, gan, optimizers, data: ImageSet, start_step: int, n_steps: int, seed: int, noise_seed: int,
                device, prox: tuple[float, dict] | None = None) -> dict:
    """``n_steps`` GAN steps on ``data`` from global step ``start_step`` (batch order: a pure function of (seed,
    step), as in the central loop). ``prox=(mu, global tensors by key)``: FedProx's proximal term, applied as its
    gradient step after each update (w <- w - lr * mu * (w - w_global)). Returns the last losses."""
    from medsynbench.benchmark.train_loop import batch_indices

    from medsynbench.amp import Amp

    tcfg = cfg.train
    amp = Amp(device.type, cfg.precision)
    torch.manual_seed(noise_seed)
    losses: dict = {}
    gan.train()
    params = dict(gan.named_parameters())
    for step in range(start_step, start_step + n_steps):
        idx = batch_indices(step, tcfg.batch_size, len(data), seed)
        batch = {"images": data.images[idx].to(device)}
        if data.masks is not None:
            batch["masks"] = data.masks[idx].to(device)
        if data.labels is not None:
            batch["labels"] = data.labels[idx].to(device)
        losses = gan.train_step(batch, optimizers, step, amp=amp)
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {losses}")
        if prox is not None:
            mu, glob = prox
            with torch.no_grad():
                for k, w in glob.items():
                    if k in params:
                        lr = tcfg.lr_d if k.startswith("discriminator.") else tcfg.lr_g
                        params[k].sub_(lr * mu * (params[k] - w.to(params[k].device)))
        gan.update_ema(tcfg.ema_decay if step >= tcfg.ema_start else 0.0)
    return losses


def new_model(cfg, bundle: DatasetBundle, device):
    from medsynbench.benchmark.train_loop import build_gan
    from medsynbench.benchmark.utils import seed_everything

    seed_everything(cfg.seed)  # every site starts from the same initial weights (those of the server)
    gan = build_gan(cfg, bundle, device)
    opts = gan.configure_optimizers(lr_g=cfg.train.lr_g, lr_d=cfg.train.lr_d, betas=tuple(cfg.train.betas),
                                    optimizer=cfg.train.optimizer)
    return gan, opts


# ------------------------------------------------------------------------------------------- evaluation
class Evaluator:
    """The project's metrics (benchmark/evaluate.py) of a generator on one client's held-out split. The extractors
    are built once with the *whole* real training split (the same feature space for every client, round and
    baseline; a U-Net encoder trained on it is then a shared, pre-agreed instrument, as an ImageNet Inception is)."""

    def __init__(self, cfg, bundle: DatasetBundle, client: ClientData, device):
        from medsynbench.benchmark.evaluate import prepare_extractors
        from omegaconf import open_dict

        self.cfg = cfg = eval_cfg(cfg)
        self.client, self.device = client, device
        full = replace(client.bundle, train=full_train(cfg, bundle))
        ext_cfg = copy.deepcopy(cfg)
        with open_dict(ext_cfg):  # ``full`` already holds the whole training split: prepare_extractors reloads nothing
            ext_cfg.data.train_size = None
        self.timings: dict = {}
        self.prepared = prepare_extractors(ext_cfg, full, device, self.timings)

    def __call__(self, gan, seed_offset: int = 0) -> list[dict]:
        from medsynbench.benchmark.defaults import metric_sample_count
        from medsynbench.benchmark.evaluate import evaluate_synthetic, sample_imageset

        b = self.client.bundle
        n, _ = metric_sample_count(self.cfg.get("n_samples"), len(b.test), [p.feature_dim for p in self.prepared])
        gan.eval()
        synth = sample_imageset(gan, n, seed=self.cfg.seed + 1_000_003 + seed_offset, bundle=b,
                                batch_size=self.cfg.metrics.get("batch_size", 64))
        out = evaluate_synthetic(self.cfg, synth, b, self.device, None, prepared=self.prepared)
        return [_compact(m) for m in out["metrics"]]


_FULL_TRAIN: dict[str, ImageSet] = {}


def full_train(cfg, bundle: DatasetBundle) -> ImageSet:
    """The whole real training split (what the extractors are built from), loaded once per process: every evaluator
    of a site (and the central baseline's one per client) shares it."""
    from medsynbench.benchmark.evaluate import full_train_split

    key = stable_hash({"dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                       "data": OmegaConf.to_container(cfg.data, resolve=True), "n": len(bundle.train)})
    if key not in _FULL_TRAIN:
        _FULL_TRAIN[key] = full_train_split(cfg, bundle)
    return _FULL_TRAIN[key]


def _compact(m: dict) -> dict:
    keep = ("metric", "value", "higher_is_better", "extractor", "warning", "n_real", "n_fake", "ci_low", "ci_high")
    out = {k: m[k] for k in keep if k in m}
    if isinstance(out.get("extractor"), dict):
        out["extractor"] = out["extractor"].get("name", str(out["extractor"]))
    return out


def eval_cfg(cfg):
    """The run config with downstream off: per-round evaluation scores the generator with the metrics only."""
    from medsynbench.benchmark.defaults import resolve_run_config
    from omegaconf import open_dict

    cfg = copy.deepcopy(resolve_run_config(cfg))
    with open_dict(cfg):
        cfg.downstream = {"task": "none"}
    return cfg


# ------------------------------------------------------------------------------------------- store records
def aggregate(rows: list[dict], model: str) -> list[dict]:
    """Client-size-weighted mean of each metric of ``model`` over the clients that report it."""
    by: dict[str, list] = {}
    for row in rows:
        if row["model"] != model:
            continue
        for m in row["metrics"]:
            if m.get("value") is not None and math.isfinite(m["value"]):
                by.setdefault(m["metric"], []).append((m["value"], row["n_train"], m))
    out = []
    for name, vals in sorted(by.items()):
        w = np.array([v[1] for v in vals], float)
        value = float(np.dot([v[0] for v in vals], w) / w.sum())
        first = vals[0][2]
        out.append({"metric": name, "value": value, "higher_is_better": first.get("higher_is_better"),
                    "extractor": first.get("extractor"), "aggregation": f"client-size-weighted mean over "
                    f"{len(vals)} clients ({model} model)", "n_clients": len(vals)})
    return out


def write_round_record(cfg, tid: str, run_dir: Path, r: int, rows: list[dict], extra: dict) -> dict:
    """One results-store record per evaluated round (evaluation id of checkpoint step r x local_steps): per-client
    rows (global and local model), the weighted aggregates, and in ``metrics`` the aggregate of the model the mode
    trains (the global model; local_only: the local models; central: the central model)."""
    from medsynbench.benchmark.run import base_record, evaluation_id
    from medsynbench.benchmark.store import write_record

    fcfg = cfg.federated
    step = r * fcfg.local_steps
    eid = evaluation_id(cfg, step=step)
    main = {"flower": "global", "local_only": "local", "central": "central"}[fcfg.mode]
    record = base_record(cfg, tid, eid, run_dir)
    aggregates = {m: aggregate(rows, m) for m in sorted({row["model"] for row in rows})}
    record.update(status="completed", evaluated_step=step, metrics=aggregates.get(main, []),
                  federated={"mode": fcfg.mode, "strategy": fcfg.strategy if fcfg.mode == "flower" else None,
                             "round": r, "rounds": fcfg.rounds, "local_steps": fcfg.local_steps, "clients": rows,
                             "aggregate": aggregates, **extra})
    write_record(cfg.paths.store_dir, record)
    return record


def write_json(path: Path, obj) -> None:
    atomic_write_json(Path(path), json.loads(json.dumps(obj, default=str)))

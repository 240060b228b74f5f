"""Federated training (benchmark/federated/): patient-disjoint partitions, FedAvg's aggregate equals the size-weighted
average of the clients' weights, and a federation whose client and server are killed continues from the last round
to the weights of an uninterrupted one. Real Flower processes on loopback gRPC (a server and two clients), isic_mini at 16 px, 2-step rounds."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from medsynbench.benchmark.federated import core
from medsynbench.benchmark.federated.partition import make_partition
from medsynbench.benchmark.run import _training_keys, execute_run

from tests.conftest import REPO, compose_config

FED = ["train=smoke", "data.image_size=16", "device=cpu", "metrics=smoke", "gan.g_filters=8", "gan.d_filters=8",
       "num_threads=1", "federated=fedavg", "federated.rounds=3", "federated.local_steps=2",
       "federated.partition.ratios=[1,3]"]


def _cfg(tmp_path, *extra):
    return compose_config([*FED, f"paths.results_dir={tmp_path / 'results'}", *extra])


def test_federated_none_keeps_central_training_ids_and_federated_ids_cover_the_federation():
    base = _training_keys(compose_config([]))
    assert _training_keys(compose_config(["federated=none"])) == base
    assert not any(k.startswith("federated") for k in base[1])
    a, b = _training_keys(compose_config(["federated=fedavg"])), _training_keys(compose_config(["federated=fedprox"]))
    assert a[0].endswith("-fedflower") and a[1] != b[1]
    assert _training_keys(compose_config(["federated=fedavg", "federated.port=9999"])) == a  # runtime key: in no id


def test_partition_is_patient_disjoint_sized_by_ratio_and_keeps_class_proportions(tmp_path):
    """A copy of isic_mini with a patient column (4 images per patient): no patient at two clients, in either split."""
    import shutil

    import pandas as pd
    from medsynbench.benchmark.data import load_dataset

    data = tmp_path / "mini"
    shutil.copytree(REPO / "data" / "isic2018_mini", data)
    index = pd.read_csv(data / "labels.csv")
    index["patient"] = [f"p{i // 4:03d}" for i in range(len(index))]
    index.to_csv(data / "labels.csv", index=False)
    cfg = compose_config(["data.image_size=16", f"dataset.root={data}", "dataset.group_column=patient",
                          "dataset.split=random", "federated=three_site"])
    bundle = load_dataset(cfg.dataset, cfg.data)
    part = make_partition(bundle, cfg.dataset, cfg.federated.partition)
    assert part.by == "group" and part.column == "group_column=patient"
    owner: dict[str, int] = {}
    for k in range(3):
        for split, idx in (("train", part.train[k]), ("test", part.test[k])):
            for i in idx:
                patient = index.set_index("image_id").loc[getattr(bundle, split).ids[i], "patient"]
                assert owner.setdefault(patient, k) == k, f"patient {patient} at clients {owner[patient]} and {k}"
    sizes = [len(t) for t in part.train]
    assert sum(sizes) == len(bundle.train) and sorted(set(sum(part.train, []))) == list(range(len(bundle.train)))
    fractions = [s / sum(sizes) for s in sizes]
    for got, want in zip(fractions, [2 / 34, 12 / 34, 20 / 34]):
        assert abs(got - want) < 0.05
    # labels: keep -> the largest client holds each class within a few percent of the pool's proportion
    pool = torch.bincount(bundle.train.labels, minlength=3).float() / len(bundle.train)
    big = torch.bincount(bundle.train.labels[part.train[2]], minlength=3).float() / sizes[2]
    assert (big - pool).abs().max() < 0.08
    # without a patient column: random over images, said so
    plain = compose_config(["data.image_size=16", "federated=three_site"])
    assert make_partition(load_dataset(plain.dataset, plain.data), plain.dataset, plain.federated.partition).by == \
        "random"


def _weights(run_dir: Path, r: int, who: str) -> dict:
    folder = core.fed_dir(run_dir) / who
    return core.load_ckpt(core.round_file(folder, r))


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory):
    """One uninterrupted FedAvg federation (3 rounds, evaluated every round), shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("fedavg")
    return execute_run(_cfg(tmp_path)), tmp_path


def test_fedavg_over_grpc_equals_size_weighted_average_and_records_per_client_rounds(fedavg_run):
    rec, tmp_path = fedavg_run
    assert rec["status"] == "completed" and rec["federated"]["round"] == 3
    run_dir = Path(rec["run_dir"])
    plan = json.loads((core.fed_dir(run_dir) / "plan.json").read_text())
    sizes = [len(t) for t in plan["partition"]["train"]]
    keys = plan["keys"]
    assert any(k.startswith("g_ema.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    for r in (1, 3):
        server = _weights(run_dir, r, "server")
        clients = [_weights(run_dir, r, f"clients/c{k}")["state_dict"] for k in range(2)]
        for key, got in zip(server["keys"], server["arrays"]):
            want = sum(n * clients[k][key].double() for k, n in enumerate(sizes)) / sum(sizes)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        # clients differ before averaging (they trained on different data)
        assert not torch.equal(clients[0][keys[0]], clients[1][keys[0]])
    # optimiser state stays local: each client's Adam moments differ
    opt = [_weights(run_dir, 3, f"clients/c{k}")["optimizers"]["g"]["state"][0]["exp_avg"] for k in range(2)]
    assert not torch.equal(opt[0], opt[1])
    # one store record per round, each with every client's global and local metrics, aggregated by client size
    from medsynbench.benchmark.store import load_records

    recs = sorted((r for r in load_records(tmp_path / "results" / "store") if "federated" in r),
                  key=lambda r: r["federated"]["round"])
    assert [r["federated"]["round"] for r in recs] == [1, 2, 3]
    rows = recs[-1]["federated"]["clients"]
    assert {(row["client"], row["model"]) for row in rows} == {(k, m) for k in range(2) for m in ("global", "local")}
    fd = {row["client"]: next(m["value"] for m in row["metrics"] if m["metric"] == "fd_random_cnn")
          for row in rows if row["model"] == "global"}
    agg = next(m["value"] for m in recs[-1]["metrics"] if m["metric"] == "fd_random_cnn")
    assert agg == pytest.approx(sum(fd[k] * n for k, n in enumerate(sizes)) / sum(sizes))
    curves = json.loads((core.fed_dir(run_dir) / "curves.json").read_text())
    assert {r["round"] for r in curves["rows"] if r["client"] == 0} == {1, 2, 3}


def _kill_when(path_fn, name: str, pids_file: Path, stop: threading.Event, killed: list):
    while not stop.is_set():
        if path_fn().is_file() and pids_file.is_file():
            pid = json.loads(pids_file.read_text())[name]
            os.kill(pid, signal.SIGKILL)
            killed.append((name, pid))
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_client_and_server_resume_from_last_round_to_the_uninterrupted_weights(tmp_path, fedavg_run):
    ref = fedavg_run[0]  # uninterrupted; eval_every is a runtime key: the same training id
    cfg = _cfg(tmp_path / "killed", "federated.eval_every=3")

    run_dir = tmp_path / "killed" / "results" / "runs" / Path(ref["run_dir"]).name
    fed = core.fed_dir(run_dir)
    stop, killed = threading.Event(), []
    # kill client 1 as soon as round 1 is checkpointed by the server, then the server once round 2 is
    t1 = threading.Thread(target=_kill_when, args=(lambda: core.round_file(fed / "server", 1), "c1",
                                                   fed / "pids.json", stop, killed))
    t2 = threading.Thread(target=_kill_when, args=(lambda: core.round_file(fed / "server", 2), "server",
                                                   fed / "pids.json", stop, killed))
    t1.start(), t2.start()
    try:
        rec = execute_run(cfg)
    finally:
        stop.set()
        t1.join(), t2.join()
    assert [k[0] for k in killed] == ["c1", "server"]
    assert rec["status"] == "completed" and rec["training_id"] == ref["training_id"]
    assert "resuming the federation after round" in (fed / "server.log").read_text()
    a, b = _weights(Path(ref["run_dir"]), 3, "server"), _weights(run_dir, 3, "server")
    # bit for bit: the strategy sorts the clients' results by client before summing (server._ordered)
    assert a["keys"] == b["keys"]
    for key, x, y in zip(a["keys"], a["arrays"], b["arrays"]):
        assert torch.equal(x, y), f"{key}: max diff {(x - y).abs().max().item():.3g}"


def _fit_results(arrays_by_client: dict[int, list], sizes: dict[int, int], order: list[int]):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    return [(None, FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(arrays_by_client[k]),
                          num_examples=sizes[k], metrics={"client": k})) for k in order]


def test_strategies_aggregate_independently_of_arrival_order_and_fedadam_steps_from_the_average():
    """Real Flower strategies, in-process: Flower's own FedAvg sums in arrival order (float32 results differ with the
    order); ours sort by client and give one bit pattern. FedAdam's update is the server Adam step on (average -
    current weights), computed here independently; a strategy rebuilt from the checkpointed moments continues it."""
    import numpy as np
    from flwr.common import parameters_to_ndarrays
    from flwr.server.strategy import FedAvg
    from medsynbench.benchmark.federated.server import make_strategy

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(64, 8)).astype(np.float32)]
    clients = {k: [(start[0] + rng.normal(scale=10.0 ** k, size=(64, 8))).astype(np.float32)] for k in range(3)}
    sizes = {0: 3, 1: 7, 2: 11}
    orders = ([0, 1, 2], [2, 0, 1], [1, 2, 0])

    def agg(strategy, order, r=1):
        return parameters_to_ndarrays(strategy.aggregate_fit(r, _fit_results(clients, sizes, order), [])[0])[0]

    plain = [agg(FedAvg(), o) for o in orders]
    assert any(not np.array_equal(plain[0], p) for p in plain[1:])  # the order matters to Flower's float32 sum
    ours = [agg(make_strategy(compose_config(["federated=fedavg"]), 3, start, {}), o) for o in orders]
    assert all(np.array_equal(ours[0], o) for o in ours[1:])
    want = sum(sizes[k] * clients[k][0].astype(np.float64) for k in range(3)) / sum(sizes.values())
    np.testing.assert_allclose(ours[0], want, rtol=1e-5, atol=1e-4)

    cfg = compose_config(["federated=fedadam", "federated.server_lr=0.05", "federated.server_betas=[0.8,0.95]",
                          "federated.server_tau=0.01"])
    adam = make_strategy(cfg, 3, start, {})
    got = [agg(adam, orders[1], r=1), agg(adam, orders[2], r=2)]
    x, m, v = start[0].astype(np.float64), 0.0, 0.0
    for r, g in zip((1, 2), got):
        delta = want - x
        m, v = 0.8 * m + 0.2 * delta, 0.95 * v + 0.05 * delta ** 2
        x = x + 0.05 * np.sqrt(1 - 0.95 ** (r + 1)) / (1 - 0.8 ** (r + 1)) * m / (np.sqrt(v) + 0.01)
        np.testing.assert_allclose(g, x, rtol=1e-4, atol=1e-4)
    # resumed after round 1 from its checkpoint (weights + moments): round 2 as if never stopped
    fresh = make_strategy(cfg, 3, start, {})
    r1 = agg(fresh, orders[0], r=1)
    resumed = make_strategy(cfg, 3, [r1], {"m_t": [torch.from_numpy(a) for a in fresh.m_t],
                                           "v_t": [torch.from_numpy(a) for a in fresh.v_t]})
    assert np.array_equal(agg(resumed, orders[0], r=2), got[1])


def test_curves_from_store_records_give_per_client_rounds_to_target_and_a_figure(fedavg_run, tmp_path):
    from medsynbench.benchmark.federated import curves as C
    from medsynbench.benchmark.store import load_records

    _, root = fedavg_run
    frame = C.curve_rows(load_records(root / "results" / "store"))
    assert C.fd_metric(frame) == "fd_random_cnn"
    curve = C.main_curves(frame, "fd_random_cnn")
    assert set(curve["client"]) == {"0", "1", "weighted"} and sorted(set(curve["round"])) == [1, 2, 3]
    c0 = curve[curve["client"] == "0"].set_index("round")["value"]
    # a target between round 2's and the others' values: reached first at the round with the smallest FD <= target
    target = float(c0.sort_values().iloc[1])
    conv, final, targets = C.summary_tables(frame, "fd_random_cnn", targets={"0": target, "1": -1.0})
    col = "federated (global model) [fedavg]"
    assert conv.set_index("client").loc["0", col] == min(r for r, v in c0.items() if v <= target)
    assert pd_isna(conv.set_index("client").loc["1", col])  # an FD below 0 is never reached
    last = final[(final["client"] == "0") & (final["metric"] == "fd_random_cnn")][col].item()
    assert last == pytest.approx(c0.loc[3])
    png = C.plot_curves(frame, tmp_path / "curves.png", "fd_random_cnn", targets)
    assert png.stat().st_size > 5000


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@pytest.mark.slow
def test_fedadam_federation_end_to_end_applies_the_server_adam_step_to_the_clients_average(tmp_path):
    import numpy as np

    rec = execute_run(_cfg(tmp_path, "federated=fedadam", "federated.rounds=2", "federated.eval_every=2"))
    assert rec["status"] == "completed" and rec["federated"]["strategy"] == "fedadam"
    run_dir = Path(rec["run_dir"])
    sizes = [len(t) for t in json.loads((core.fed_dir(run_dir) / "plan.json").read_text())["partition"]["train"]]
    prev, m_prev, v_prev = core.load_ckpt(core.fed_dir(run_dir) / "initial.pt")["arrays"], None, None
    for r in (1, 2):
        server = _weights(run_dir, r, "server")
        clients = [_weights(run_dir, r, f"clients/c{k}")["state_dict"] for k in range(2)]
        assert "m_t" in server and len(server["m_t"]) == len(server["keys"])
        for i, key in enumerate(server["keys"]):
            avg = sum(n * clients[k][key].double() for k, n in enumerate(sizes)) / sum(sizes)
            delta = avg - prev[i].double()
            m = 0.1 * delta + (0.9 * m_prev[i].double() if m_prev else 0)
            v = 0.01 * delta ** 2 + (0.99 * v_prev[i].double() if v_prev else 0)
            torch.testing.assert_close(server["m_t"][i].double(), m, rtol=1e-4, atol=1e-6)
            eta = 0.01 * np.sqrt(1 - 0.99 ** (r + 1)) / (1 - 0.9 ** (r + 1))
            torch.testing.assert_close(server["arrays"][i].double(), prev[i].double() + eta * m / (v.sqrt() + 1e-3),
                                       rtol=1e-4, atol=1e-5)
        prev, m_prev, v_prev = server["arrays"], server["m_t"], server["v_t"]

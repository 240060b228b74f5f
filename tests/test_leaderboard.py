"""Honest leaderboards: seeds are averaged only over runs that differ in nothing but the seed.

Records are written as JSON files straight into <store>/records (the store's record format: run-level fields,
flattened config, metric and downstream records, training/evaluation/record ids, collapsed flag), so these tests
do not depend on the writer's signature.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medsynbench.benchmark.leaderboard import (
    VOLATILE_KEYS,
    fmt,
    leaderboard,
    to_markdown,
    write_leaderboard,
)
from medsynbench.benchmark.store import load_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARN = "fewer samples (80) than feature dimensions (128): covariances are singular"


def make(seed, fd, *, gan="dcgan", dataset="isic_mini", size=64, kid=None, dice=None, warning=None,
         collapsed=False, evaluation="e1", recorded_at="2026-01-01T00:00:00", status="completed", sha="aaaa1111",
         n=80, **cfg):
    """One store record; volatile keys (paths, dataset.root, device) deliberately differ per record."""
    config = {"experiment_name": "quickstart-v1", "dataset.name": dataset, "dataset.root": f"/data/{seed}",
              "data.image_size": size, "data.train_size": None, "gan.name": gan, "train.steps": 600,
              "metrics.seed": 0, "seed": seed, "device": ["cpu", "cuda"][seed % 2],
              "paths.results_dir": f"/tmp/r{seed}", "train.progress": bool(seed % 2), **cfg}
    training_id = f"{dataset}-{gan}-{size}-s{seed}-{abs(hash(json.dumps(config, sort_keys=True))) % 10**8}"
    proto = {"extractor": "unet_encoder", "weights": "trained", "weights_sha256": sha + "0" * 56,
             "feature_dim": 128, "n_real": n, "n_fake": n, "seed": 0}  # metric seed 0: not the run's seed
    metrics = [{"metric": "fd_unet", "value": fd, "higher_is_better": False, "warning": warning, **proto}]
    if kid is not None:
        metrics.append({"metric": "kid_unet", "value": kid, "higher_is_better": False, **proto})
    downstream = [] if dice is None else [{"metric": "dice_unet", "train_on": "synthetic", "value": dice,
                                           "higher_is_better": True, "model": "unet-resnet18"}]
    return {"run_id": training_id, "training_id": training_id, "evaluation_id": evaluation,
            "record_id": f"{training_id}--{evaluation}", "status": status, "seed": seed, "dataset": dataset,
            "gan": gan, "train_size": None, "experiment": "quickstart-v1", "config": config, "metrics": metrics,
            "downstream": downstream, "collapsed": collapsed,
            "collapse_reasons": ["mode_collapse: recall_k3_unet=0 <= 0.02 and coverage_k3_unet=0.03 <= 0.1"]
            if collapsed else [], "recorded_at": recorded_at}


def store(tmp_path, records):
    folder = tmp_path / "store" / "records"
    folder.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        (folder / f"{i:03d}-{rec['record_id']}.json").write_text(json.dumps(rec))
    return tmp_path / "store"


def test_two_image_sizes_are_never_pooled_as_seeds():
    recs = [make(0, 196.0, size=64), make(1, 198.0, size=64), make(0, 380.0, size=32)]
    board = leaderboard(recs, "fd_unet")
    assert board.attrs["grouping"] == "automatic"
    assert "data.image_size" in board.attrs["group_by"] and "seed" not in board.attrs["group_by"]
    assert not any(k in board.attrs["group_by"] for k in ("dataset.root", "device", "paths.results_dir"))
    by_size = board.set_index("data.image_size")
    assert by_size.loc["64", "fd_unet_n_seeds"] == 2 and by_size.loc["64", "fd_unet_mean"] == pytest.approx(197.0)
    assert by_size.loc["32", "fd_unet_n_seeds"] == 1 and by_size.loc["32", "fd_unet_mean"] == pytest.approx(380.0)
    assert "pooled" not in board


def test_two_datasets_are_never_ranked_in_one_group():
    recs = [make(0, 10.0, dataset="isic_mini", sha="aaaa1111"), make(1, 12.0, dataset="isic_mini", sha="aaaa1111"),
            make(0, 5.0, dataset="kvasir", sha="bbbb2222"), make(0, 30.0, dataset="kvasir", gan="wgan_gp",
                                                               sha="bbbb2222")]
    board = leaderboard(recs, "fd_unet")
    assert len(board) == 3 and board.groupby("dataset.name").size().to_dict() == {"isic_mini": 1, "kvasir": 2}
    ranks = dict(zip(zip(board["dataset.name"], board["gan.name"]), board["rank"]))
    assert ranks == {("isic_mini", "dcgan"): 1, ("kvasir", "dcgan"): 1, ("kvasir", "wgan_gp"): 2}
    assert "2 separate rankings" in to_markdown(board)
    # even when the user groups by GAN only, the datasets are reported as pooled, never silently mixed
    pooled = leaderboard(recs, "fd_unet", group_by=["gan.name"])
    assert "dataset.name" in pooled.attrs["pooled"]


def test_explicit_group_by_lists_pooled_keys(tmp_path):
    recs = [make(0, 196.0, size=64), make(1, 198.0, size=64), make(0, 380.0, size=32)]
    board, text, path = write_leaderboard(store(tmp_path, recs), tmp_path / "lb", "fd_unet", ["gan.name"])
    assert board.attrs["pooled"] == {"data.image_size": ["32", "64"]}
    assert board["pooled"].tolist() == ["data.image_size"]
    assert "Pooled" in text and "`data.image_size` ∈ {32, 64}" in text
    assert board["fd_unet_n_seeds"].tolist() == [2]  # seeds 0 and 1: the 32 px run of seed 0 is not a third seed
    assert json.loads(path.with_suffix(".json").read_text())["pooled"] == {"data.image_size": ["32", "64"]}
    assert "pooled" in pd.read_csv(path.with_suffix(".csv")).columns


def test_n_seeds_counts_distinct_seeds_and_duplicate_record_ids_keep_the_newest():
    # seed 0 evaluated twice with the same config (two evaluation ids): one seed, its two values averaged first
    recs = [make(0, 10.0, evaluation="e1"), make(0, 14.0, evaluation="e2"), make(1, 20.0)]
    board = leaderboard(recs, "fd_unet")
    assert board["fd_unet_n_seeds"].tolist() == [2] and board["fd_unet_n_records"].tolist() == [3]
    assert board["fd_unet_mean"].tolist() == pytest.approx([(12.0 + 20.0) / 2])
    # `train seed=0,1` then `evaluate` of seed 0: the re-evaluation shares seed 0's record id; newest wins
    old, new = make(0, 100.0, recorded_at="2026-01-01T00:00:00"), make(0, 10.0, recorded_at="2026-01-02T00:00:00")
    for order in ([old, make(1, 14.0), new], [new, make(1, 14.0), old]):
        board = leaderboard(order, "fd_unet")
        assert board["fd_unet_n_seeds"].tolist() == [2] and board["fd_unet_mean"].tolist() == pytest.approx([12.0])


def test_train_two_seeds_then_evaluate_seed_0_gives_two_seeds_and_the_right_mean():
    """`train seed=0,1` stores two records (evaluate_step null); `evaluate run_dir=<seed 0>` re-evaluates the last
    checkpoint (evaluate_step set to it, same evaluation id, so the same record id) and replaces seed 0's record."""
    s0 = make(0, 100.0, evaluate_step=None)
    s1 = make(1, 14.0, evaluate_step=None)
    again = {**make(0, 10.0, evaluate_step=600, recorded_at="2026-01-02T00:00:00"), "record_id": s0["record_id"],
             "evaluated_step": 600, "evaluation_only": True}
    board = leaderboard([s0, s1, again], "fd_unet")
    assert "evaluate_step" not in board.attrs["group_by"]
    assert board["fd_unet_n_seeds"].tolist() == [2] and board["fd_unet_mean"].tolist() == pytest.approx([12.0])
    # an earlier checkpoint is another evaluation: its own row, never a third seed
    early = {**make(0, 50.0, evaluate_step=300, evaluation="e300"), "evaluated_step": 300}
    board = leaderboard([s0, s1, again, early], "fd_unet")
    assert board.set_index("evaluate_step")["fd_unet_n_seeds"].to_dict() == {"300": 1, "600": 2}


def test_ci_is_the_student_t_interval_over_seeds():
    values = [1.0, 2.0, 4.0, 7.5]
    board = leaderboard([make(s, v) for s, v in enumerate(values)], "fd_unet")
    mean, sd, n = np.mean(values), np.std(values, ddof=1), len(values)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert board["fd_unet_std"].iloc[0] == pytest.approx(sd)
    assert board["fd_unet_ci95_lo"].iloc[0] == pytest.approx(mean - half)
    assert board["fd_unet_ci95_hi"].iloc[0] == pytest.approx(mean + half)
    ninety = leaderboard([make(s, v) for s, v in enumerate(values)], "fd_unet", ci=0.9)
    assert ninety["fd_unet_ci90_hi"].iloc[0] == pytest.approx(mean + stats.t.ppf(0.95, n - 1) * sd / np.sqrt(n))
    single = leaderboard([make(0, 3.0)], "fd_unet")
    assert np.isnan(single["fd_unet_std"].iloc[0]) and np.isnan(single["fd_unet_ci95_lo"].iloc[0])
    assert "| –" in to_markdown(single) or "–" in to_markdown(single)


def test_several_metrics_in_one_table_ranked_by_the_first():
    recs = [make(s, fd, gan=g, kid=kid, dice=dice) for g, fd, kid, dice in
            [("dcgan", 100.0, 0.05, 0.6), ("wgan_gp", 80.0, 0.09, 0.7)] for s in (0, 1)]
    metrics = ["kid_unet", "fd_unet", "dice_unet@synthetic"]
    board = leaderboard(recs, metrics)
    assert board["gan.name"].tolist() == ["dcgan", "wgan_gp"]  # lower KID first
    for m in metrics:
        for col in ("mean", "std", "ci95_lo", "ci95_hi", "n_seeds", "n_warn"):
            assert f"{m}_{col}" in board
    assert leaderboard(recs, metrics[::-1])["gan.name"].tolist() == ["wgan_gp", "dcgan"]  # higher Dice first
    md = to_markdown(board)
    assert "kid_unet ↓" in md and "dice_unet@synthetic ↑" in md and "ranked by `kid_unet`" in md
    assert all(f"{m} 95% CI" in md for m in metrics)
    assert "Protocol `kid_unet`: extractor unet_encoder · weights sha256 aaaa11110000" in md and "n_real 80" in md
    with pytest.raises(KeyError, match="fid_inception.*available"):
        leaderboard(recs, ["kid_unet", "fid_inception"])
    with pytest.raises(KeyError, match="not_a_key"):
        leaderboard(recs, metrics, group_by=["not_a_key"])


def test_filters_on_config_keys_and_run_columns():
    recs = [make(0, 10.0), make(0, 5.0, dataset="kvasir"), make(0, 7.0, gan="wgan_gp"),
            make(1, 1e9, status="diverged")]
    board = leaderboard(recs, "fd_unet", where={"dataset": {"name": "kvasir"}})  # as Hydra nests +filter.dataset.name
    assert board["dataset.name"].tolist() == ["kvasir"] and board.attrs["filters"] == {"dataset.name": "kvasir"}
    board = leaderboard(recs, "fd_unet", where={"dataset": "isic_mini", "gan.name": ["dcgan", "wgan_gp"]})
    assert sorted(board["gan.name"]) == ["dcgan", "wgan_gp"] and (board["fd_unet_n_seeds"] == 1).all()
    assert leaderboard(recs, "fd_unet", where={"data.image_size": 64.0})["fd_unet_n_seeds"].sum() == 3
    dcgan = {"dataset": "isic_mini", "gan.name": "dcgan"}
    assert leaderboard(recs, "fd_unet", where=dcgan)["fd_unet_mean"].tolist() == [10.0]  # diverged run excluded
    assert leaderboard(recs, "fd_unet", where=dcgan, include_failed=True)["fd_unet_n_seeds"].tolist() == [2]
    diverged = leaderboard(recs, "fd_unet", where={"status": "diverged"})
    assert diverged["fd_unet_mean"].tolist() == [1e9]
    with pytest.raises(KeyError, match="not_a_key"):
        leaderboard(recs, "fd_unet", where={"not_a_key": 1})
    with pytest.raises(KeyError, match="match the filters"):
        leaderboard(recs, "fd_unet", where={"dataset.name": "nowhere"})


def test_different_groupings_write_different_files(tmp_path):
    root = store(tmp_path, [make(0, 196.0, size=64), make(1, 198.0, size=64), make(0, 380.0, size=32)])
    out = tmp_path / "lb"
    _, _, auto = write_leaderboard(root, out, "fd_unet")
    _, _, by_gan = write_leaderboard(root, out, "fd_unet", ["gan.name"])
    _, _, filtered = write_leaderboard(root, out, "fd_unet", where={"data.image_size": 64})
    _, _, multi = write_leaderboard(root, out, "fd_unet", ["gan.name", "data.image_size"])
    paths = {auto, by_gan, filtered, multi}
    assert len(paths) == 4 and all(p.is_file() and p.name.startswith("fd_unet-") for p in paths)
    assert write_leaderboard(root, out, "fd_unet")[2] == auto  # the same request refreshes its own file
    assert len(list(out.glob("*.md"))) == 4 and len(list(out.glob("*.csv"))) == 4
    header = auto.with_suffix(".csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["rank", "dataset.name", "gan.name", "data.image_size"]
    assert {"fd_unet_mean", "fd_unet_std", "fd_unet_ci95_lo", "fd_unet_ci95_hi", "fd_unet_n_seeds",
            "fd_unet_n_warn", "n_collapsed"} <= set(header)
    assert not any(c.startswith("_") for c in header)


def test_warning_mark_quotes_the_warning():
    board = leaderboard([make(0, 196.1, warning=WARN), make(1, 198.0, warning=WARN), make(0, 50.0, gan="b")],
                        "fd_unet")
    assert board.set_index("gan.name")["fd_unet_n_warn"].to_dict() == {"b": 0, "dcgan": 2}
    md = to_markdown(board)
    assert "197.1 ± 1.3 †" in md  # the marked cell (mean 197.05)
    assert f"† `fd_unet` (2 record(s) warn): {WARN}" in md
    assert md.count("†") == 2  # one cell, one footnote


def test_collapsed_seeds_are_counted_and_marked():
    board = leaderboard([make(0, 300.0, collapsed=True), make(1, 150.0), make(0, 90.0, gan="wgan_gp")], "fd_unet")
    assert board.set_index("gan.name")["n_collapsed"].to_dict() == {"wgan_gp": 0, "dcgan": 1}
    md = to_markdown(board)
    assert "✗ 1 of 2" in md and "mode_collapse" in md


def test_readable_numbers_and_full_precision_csv(tmp_path):
    assert [fmt(196.1234), fmt(180.33, 2), fmt(0.000123456), fmt(123456.7), fmt(7.0), fmt(float("nan"))] == \
        ["196.1", "180", "0.0001235", "123457", "7", "–"]
    recs = [make(0, 68.123456789), make(1, 324.5)]  # std ~ 1.8e+02 in the old table
    _, text, path = write_leaderboard(store(tmp_path, recs), tmp_path / "lb", "fd_unet")
    assert "e+" not in text and "e-0" not in text
    assert "196.3 ± 181 " in text and "[-1432, 1825]" in text  # std 181.3: integer part kept whole
    assert pd.read_csv(path.with_suffix(".csv"))["fd_unet_mean"][0] == pytest.approx((68.123456789 + 324.5) / 2,
                                                                                     rel=1e-15)


def test_volatile_keys_constant():
    assert {"paths", "device", "num_threads", "dataset.root", "evaluate", "seed"} <= set(VOLATILE_KEYS)


def test_cli_filters_and_several_metrics(tmp_path):
    recs = [make(s, fd, gan=g, kid=kid, dice=0.5) for g, fd, kid in [("dcgan", 100.0, 0.05), ("wgan_gp", 80.0, 0.09)]
            for s in (0, 1)] + [make(0, 1.0, dataset="kvasir", kid=0.01, dice=0.9)]
    root = store(tmp_path, recs)
    out = subprocess.run([sys.executable, "-m", "benchmark", "leaderboard",
                          "metric=[kid_unet,fd_unet,dice_unet@synthetic]", "+filter.dataset.name=isic_mini",
                          f"paths.store_dir={root}", f"paths.leaderboard_dir={tmp_path / 'lb'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Filters: `dataset.name=isic_mini`" in out.stdout and "kvasir" not in out.stdout.split("Filters")[1]
    (csv,) = (tmp_path / "lb").glob("*.csv")
    assert csv.name.startswith("kid_unet+fd_unet+dice_unet_at_synthetic-")
    assert pd.read_csv(csv)["kid_unet_n_seeds"].tolist() == [2, 2]
    assert len(load_records(root)) == 5

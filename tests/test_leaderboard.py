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


# --- CI methods, LaTeX and HTML outputs, the metric list of the CLI ---------------------------------------------------
def _exact_bootstrap_quantiles(values, probs):
    """Quantiles of the exact bootstrap distribution of the mean: all n**n equally likely resamples enumerated."""
    import itertools

    values = np.asarray(values, dtype=float)
    means = np.array([values[list(idx)].mean() for idx in itertools.product(range(len(values)), repeat=len(values))])
    return np.quantile(means, probs)


def test_bootstrap_ci_against_the_exact_bootstrap_distribution():
    from medsynbench.benchmark.leaderboard import bootstrap_ci

    values = [1.0, 2.0, 4.0, 7.5, 3.0]  # 5**5 = 3125 resamples, enumerated exactly
    recs = [make(s, v) for s, v in enumerate(values)] + [make(0, 1.0, evaluation="e2")]  # seed 0 twice: one value
    board = leaderboard(recs, "fd_unet", ci_method="bootstrap")
    lo, hi = board["fd_unet_ci95_lo"].iloc[0], board["fd_unet_ci95_hi"].iloc[0]
    assert board.attrs["ci_method"] == "bootstrap" and board.attrs["n_boot"] == 2000
    assert (lo, hi) == bootstrap_ci(values, 0.95, 2000, 0)  # per-seed values, n_boot and seed as documented
    # 2000 resamples estimate the 2.5% / 97.5% quantiles of the exact distribution (Monte-Carlo sd ~0.35 %)
    q = _exact_bootstrap_quantiles(values, [0.01, 0.045, 0.955, 0.99])
    assert q[0] <= lo <= q[1] and q[2] <= hi <= q[3]
    assert min(values) <= lo < np.mean(values) < hi <= max(values)
    # seeded: the same seed gives the same interval, another seed a slightly different one
    again = leaderboard(recs, "fd_unet", ci_method="bootstrap")
    assert (again["fd_unet_ci95_lo"].iloc[0], again["fd_unet_ci95_hi"].iloc[0]) == (lo, hi)
    many = np.random.default_rng(3).normal(100.0, 10.0, 12)  # nearly continuous resample means: seeds differ
    assert bootstrap_ci(many, seed=0) == bootstrap_ci(many, seed=0) != bootstrap_ci(many, seed=1)
    # t (the default) stays scipy's Student-t interval; mean and std do not depend on the method
    t_board = leaderboard(recs, "fd_unet")
    t_lo, t_hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert t_board["fd_unet_ci95_lo"].iloc[0] == pytest.approx(t_lo) and t_board["fd_unet_ci95_hi"].iloc[0] == \
        pytest.approx(t_hi)
    assert t_board["fd_unet_mean"].iloc[0] == board["fd_unet_mean"].iloc[0] == pytest.approx(np.mean(values))
    # two seeds: the resample means are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4 -> the 95% CI is [a, b]
    assert bootstrap_ci([3.0, 5.0]) == (3.0, 5.0)
    assert all(np.isnan(bootstrap_ci([3.0]))) and bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    single = leaderboard([make(0, 3.0)], "fd_unet", ci_method="bootstrap")
    assert np.isnan(single["fd_unet_ci95_lo"].iloc[0])
    with pytest.raises(ValueError, match="ci_method.*'t', 'bootstrap'.*'boot'"):
        leaderboard(recs, "fd_unet", ci_method="boot")


def test_bootstrap_is_named_in_the_header_and_the_file_name(tmp_path):
    from medsynbench.benchmark.leaderboard import output_stem

    root = store(tmp_path, [make(s, v, kid=v / 1000) for s, v in enumerate([10.0, 12.0, 15.0])])
    _, t_text, t_path = write_leaderboard(root, tmp_path / "lb", "fd_unet")
    _, b_text, b_path = write_leaderboard(root, tmp_path / "lb", "fd_unet", ci_method="bootstrap", n_boot=500)
    assert "Student-t 95% CI" in t_text and "bootstrap" not in t_text
    assert "percentile bootstrap 95% CI (500 resamples, seed 0)" in b_text
    assert t_path != b_path and t_path.name == output_stem(["fd_unet"], None, None, False, 0.95) + ".md"
    assert b_path != write_leaderboard(root, tmp_path / "lb", "fd_unet", ci_method="bootstrap")[2]  # n_boot too
    sidecar = json.loads(b_path.with_suffix(".json").read_text())
    assert (sidecar["ci_method"], sidecar["n_boot"], sidecar["boot_seed"]) == ("bootstrap", 500, 0)


class _Tables:
    """The tables of an HTML page (stdlib parser): headers, rows of cell texts, and the tooltips."""

    def __init__(self, text):
        from html.parser import HTMLParser

        self.tables, self.titles, self.protocol = [], [], ""
        outer = self

        class Parser(HTMLParser):
            cell = None
            in_protocol = 0

            def handle_starttag(self, tag, attrs):
                attrs = dict(attrs)
                if attrs.get("title"):
                    outer.titles.append(attrs["title"])
                if attrs.get("id") == "protocol":
                    self.in_protocol = 1
                if tag == "table":
                    outer.tables.append({"head": [], "rows": []})
                elif tag == "tr" and outer.tables:
                    outer.tables[-1]["rows"].append([])
                elif tag in ("td", "th"):
                    self.cell = tag, ""

            def handle_endtag(self, tag):
                if tag in ("td", "th") and self.cell:
                    kind, text = self.cell
                    (outer.tables[-1]["head"] if kind == "th" else outer.tables[-1]["rows"][-1]).append(text)
                    self.cell = None
                if tag == "div" and self.in_protocol:
                    self.in_protocol = 0

            def handle_data(self, data):
                if self.cell:
                    self.cell = self.cell[0], self.cell[1] + data
                if self.in_protocol:
                    outer.protocol += data

        Parser().feed(text)
        for t in self.tables:
            t["rows"] = [r for r in t["rows"] if r]


def test_latex_and_html_outputs_carry_protocol_marks_and_footnotes(tmp_path):
    recs = [make(0, 196.1, kid=0.1, warning=WARN), make(1, 198.0, kid=0.12, warning=WARN),
            make(0, 300.0, gan="wgan_gp", kid=0.3, collapsed=True), make(1, 250.0, gan="wgan_gp", kid=0.2)]
    board, md, path = write_leaderboard(store(tmp_path, recs), tmp_path / "lb", ["fd_unet", "kid_unet"])
    files = json.loads(path.with_suffix(".json").read_text())["files"]
    assert files == {"markdown": path.name, "csv": path.with_suffix(".csv").name,
                     "latex": path.with_suffix(".tex").name, "html": path.with_suffix(".html").name}
    # LaTeX: booktabs rules, one line per row, escaped names, marks as LaTeX commands with their footnotes
    tex = path.with_suffix(".tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(board) == 2 and all(line.endswith(r"\\") for line in body)
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0]
    assert r"fd\_unet $\downarrow$" in header and "fd_unet" not in header.replace(r"\_", "")
    # rank, dataset, GAN: l; per metric mean ± std, CI, n: right-aligned numbers; collapsed: l
    assert tex.split(r"\begin{tabular}{")[1].split("}")[0] == "rll" + "rrr" * 2 + "l" == "rll" + "r" * 6 + "l"
    assert len(header.split(" & ")) == 10
    assert r"197.1 $\pm$ 1.3 \dag{}" in body[0] and r"$\times$ 1 of 2" in body[1]
    caption = tex.split(r"\caption{")[1].split(r"\label")[0]
    assert r"Student-t 95\% CI" in caption and "weights sha256 aaaa11110000" in caption and "n\\_real 80" in caption
    foot = tex.split(r"\bottomrule")[1]
    assert r"\dag{} fd\_unet (2 record(s) warn): fewer samples (80)" in foot and r"$\times$ collapsed" in foot
    assert all(ch not in tex.split("\n", 5)[-1] for ch in "†✗±↓")  # only in the leading % comment lines
    assert tex.startswith("% medsynbench leaderboard") and "% Protocol fd_unet: extractor unet_encoder" in tex
    # HTML: one self-contained page with the protocol in its header, the same rows and marks, the footnotes
    page = path.with_suffix(".html").read_text()
    assert "http://" not in page and "https://" not in page and "<script>" in page
    parsed = _Tables(page)
    (table,) = parsed.tables
    assert [h.strip() for h in table["head"]][:4] == ["rank", "dataset.name", "gan.name", "fd_unet ↓"]
    assert [r[2] for r in table["rows"]] == board["gan.name"].tolist() == ["dcgan", "wgan_gp"]
    assert table["rows"][0][3] == "197.1 ± 1.3 †" and table["rows"][1][-1] == "✗ 1 of 2"
    assert "Student-t 95% CI" in parsed.protocol and "grouping" in parsed.protocol
    assert any("fd_unet, kid_unet: extractor unet_encoder · weights sha256 aaaa11110000" in t for t in parsed.titles)
    assert f"† fd_unet (2 record(s) warn): {WARN}" in page and "✗ collapsed generator" in page
    # the Markdown keeps its header: the protocol line per metric
    assert "Protocol `fd_unet`: extractor unet_encoder · weights sha256 aaaa11110000" in md


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "benchmark", "leaderboard", *args,
                           f"paths.leaderboard_dir={tmp_path / 'lb'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_lists_the_store_metrics_when_metric_is_missing_or_unknown(tmp_path):
    from medsynbench.benchmark.leaderboard import metrics_message

    root = store(tmp_path, [make(s, 10.0 + s, kid=0.1, dice=0.5) for s in (0, 1)])
    for args in ([], ["metric=[kid_unet,dice_unet@real]"]):
        out = _cli(tmp_path, f"paths.store_dir={root}", *args)
        assert out.returncode == 2, (args, out.stderr[-2000:])
        err = out.stderr
        assert "fd_unet, kid_unet" in err and "dice_unet@synthetic" in err, err
        for raw in ("Traceback", "KeyError", "MissingMandatoryValue"):
            assert raw not in err, err
        assert err.count("error:") == 1
        assert ("no metric given" in err) if not args else (args[0].split("=")[1].strip("[]").split(",")[-1] in err)
    assert not (tmp_path / "lb").exists()  # nothing written
    assert "has no metric records" in metrics_message(tmp_path / "nothing")  # an empty or absent store
    ok = _cli(tmp_path, f"paths.store_dir={root}", "metric=fd_unet", "ci_method=bootstrap", "n_boot=300")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "percentile bootstrap 95% CI (300 resamples, seed 0)" in ok.stdout
    assert sorted(p.suffix for p in (tmp_path / "lb").iterdir()) == [".csv", ".html", ".json", ".md", ".tex"]
    bad = _cli(tmp_path, f"paths.store_dir={root}", "metric=fd_unet", "ci_method=percentile")
    assert bad.returncode == 2 and "ci_method" in bad.stderr and "bootstrap" in bad.stderr

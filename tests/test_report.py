"""`medsynbench report`: every table and figure of the four studies' layouts from a results store built here.

The store is written with the store's own writer (``write_record``): two datasets (a segmentation one with U-Net
Dice scores, a classification one with accuracy / AUC), five GANs (conditional and unconditional), three
training-set sizes, several seeds, four downstream scenarios, two feature spaces (two normalisations), per-image
delentropy values, sample grids in run directories and one training evaluated at two checkpoints. Every table value
is checked against the records it came from.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from medsynbench.benchmark.report import SECTIONS, build_report
from medsynbench.benchmark.store import write_record
from medsynbench.benchmark.validate import ConfigError

REPO = Path(__file__).resolve().parents[1]
SEG, CLS = "segds", "clsds"
SEG_GANS, SIZES, SEG_SEEDS = ("dcgan", "lsgan", "wgan"), (50, 100, 200), (0, 1, 2)
CLS_GANS, CLS_SEEDS = ("stylegan2", "stylegan2_cond"), (0, 1, 2)
SCENARIOS = ("real", "real_augmented", "synthetic", "real+synthetic")


def _proto(extractor="unet_encoder", normalise="minus_one_one", n=100):
    return {"extractor": extractor, "weights": "trained here", "weights_sha256": "ab12cd34" * 8, "feature_dim": 64,
            "n_real": n, "n_fake": n, "implementation": "test",
            "preprocessing": json.dumps({"normalise": normalise, "resize": 32})}


def _fd_family(rng, suffix, normalise, base):
    """fd_<suffix>, fd_rr_<suffix>, r_fd_<suffix> (FD_rr / size-matched FD_rs), kid, precision, recall."""
    p = _proto(normalise=normalise)
    fd, fd_rr = base + rng.uniform(0, 5), rng.uniform(1, 3)
    fd_rs = fd + rng.uniform(0, 2)
    return [
        {"metric": f"fd_{suffix}", "base_metric": "fd", "value": fd, "higher_is_better": False, **p},
        {"metric": f"fd_rr_{suffix}", "base_metric": "fd_rr", "value": fd_rr, "higher_is_better": False,
         "subset_size": 50, **p},
        {"metric": f"r_fd_{suffix}", "base_metric": "r_fd", "value": fd_rr / fd_rs, "fd_rr": fd_rr,
         "fd_rs_matched": fd_rs, "subset_size": 50, "higher_is_better": True, **p},
        {"metric": f"kid_{suffix}", "base_metric": "kid", "value": rng.uniform(0.01, 0.2), "higher_is_better": False,
         **p},
        {"metric": f"precision_k3_{suffix}", "base_metric": "precision", "value": rng.uniform(0, 1), "k": 3,
         "higher_is_better": True, **p},
        {"metric": f"recall_k3_{suffix}", "base_metric": "recall", "value": rng.uniform(0, 1), "k": 3,
         "higher_is_better": True, **p},
    ]


def _record(rng, dataset, gan, size, seed, runs_dir, *, downstream_metrics, step=300, ppl=False, n_train_all=300):
    conditional = gan.endswith("_cond")
    config = {"experiment_name": "report-test", "dataset.name": dataset, "data.image_size": 32,
              "data.train_size": size, "gan.name": gan, "gan.conditional": conditional, "train.steps": 300,
              "evaluate_step": None if step == 300 else step, "seed": seed, "paths.runs_dir": str(runs_dir),
              "device": "cpu"}
    tid = f"{dataset}-{gan}-n{size or 'all'}-s{seed}-t{abs(hash((dataset, gan, size, seed))) % 10**6:06d}"
    base = 40 + 30 * (SEG_GANS + CLS_GANS).index(gan) - (size or 400) / 10
    metrics = _fd_family(rng, "unet", "minus_one_one", base) + _fd_family(rng, "unet01", "zero_one", base * 1.1)
    real = np.round(np.random.default_rng(len(dataset)).normal(4.6, 0.1, 40), 4)  # one test split per dataset
    fake = np.round(rng.normal(4.7, 0.05, 40), 4)
    metrics.append({"metric": "delentropy_w1", "base_metric": "delentropy", "value": float(
        stats.wasserstein_distance(real, fake)), "higher_is_better": False, "extractor": "pixels",
        "real_values": json.dumps(real.tolist()), "fake_values": json.dumps(fake.tolist()), "n_real": 40,
        "n_fake": 40})
    if ppl:
        metrics.append({"metric": "ppl_lpips", "base_metric": "ppl", "value": rng.uniform(50, 200),
                        "higher_is_better": False, "extractor": "lpips"})
    downstream = [{"metric": m, "train_on": on, "value": rng.uniform(0.2, 0.9), "higher_is_better": True,
                   "model": "test-net"} for m in downstream_metrics for on in SCENARIOS]
    run_dir = runs_dir / tid
    return {"run_id": tid, "training_id": tid, "evaluation_id": f"e{step}", "status": "completed", "seed": seed,
            "dataset": dataset, "gan": gan, "train_size": size, "experiment": "report-test", "config": config,
            "metrics": metrics, "downstream": downstream, "run_dir": str(run_dir), "evaluated_step": step,
            "data": {"counts": {"train": size or n_train_all, "test": 40}}, "collapsed": False}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    runs = root / "runs"
    records = []
    for gan in SEG_GANS:
        for size in SIZES:
            for seed in SEG_SEEDS:
                records.append(_record(rng, SEG, gan, size, seed, runs, downstream_metrics=["dice_unet"]))
    for gan in CLS_GANS:
        for seed in CLS_SEEDS:
            records.append(_record(rng, CLS, gan, None, seed, runs, downstream_metrics=["acc_effnet", "auc_effnet"],
                                   ppl=True))
    # one training also evaluated at an earlier checkpoint: a point of its training curve, not another run
    early = _record(rng, SEG, "dcgan", 200, 0, runs, downstream_metrics=["dice_unet"], step=100)
    main = next(r for r in records if r["gan"] == "dcgan" and r["train_size"] == 200 and r["seed"] == 0)
    early.update(training_id=main["training_id"], run_id=main["training_id"], run_dir=main["run_dir"])
    for m in early["metrics"]:
        m["value"] += 500.0  # so large that only an (unwanted) inclusion in the tables could make it best/worst
    records.append(early)
    for rec in records:
        write_record(root / "store", rec)
    # sample grids of the segmentation runs only (the classification runs' are missing: a note)
    for rec in records:
        if rec["dataset"] == SEG:
            folder = Path(rec["run_dir"]) / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((48, 48, 3), 40 * SEG_GANS.index(rec["gan"]), np.uint8)).save(
                folder / "step_0000300.png")
    final = [r for r in records if r["evaluated_step"] == 300]
    return {"root": root, "store": root / "store", "runs": runs, "records": final, "early": early}


@pytest.fixture(scope="module")
def report(store):
    out = store["root"] / "out"
    sections = build_report(store["store"], out, {"experiment_name": "report-test"}, n_boot=300)
    return {"out": out, "sections": {s.key: s for s in sections}}


def _values(records, metric, **where):
    """(record, value) of a metric or downstream score ``<metric>@<train_on>`` in the records matching ``where``."""
    out = []
    for rec in records:
        if any(rec[k] != v for k, v in where.items()):
            continue
        if "@" in metric:
            name, on = metric.split("@")
            out += [(rec, d["value"]) for d in rec["downstream"] if d["metric"] == name and d["train_on"] == on]
        else:
            out += [(rec, m["value"]) for m in rec["metrics"] if m["metric"] == metric]
    return out


def _seed_mean(pairs):
    per_seed = pd.Series([v for _, v in pairs]).groupby([r["seed"] for r, _ in pairs]).mean()
    return float(np.mean(per_seed)), per_seed


def _table(report, section, name):
    sec = report["sections"][section]
    return next(t for t in sec.tables if t.name == name)


def test_every_section_is_built(report):
    assert set(report["sections"]) == set(SECTIONS)
    for key, sec in report["sections"].items():
        assert not sec.empty, f"{key}: {sec.notes}"


def test_empirical_table2_best_of_sweep(report, store):
    frame = _table(report, "empirical_table2", f"empirical_table2_{SEG}").frame
    fd_col = next(c for c in frame.columns if c.startswith("FD (unet_encoder)"))
    dice_col = next(c for c in frame.columns if c.startswith("Dice (dice_unet)"))
    assert not any("FID" in c for c in frame.columns)  # a U-Net-encoder FD is never called FID
    rows = frame.set_index("Data")
    recs = store["records"]
    for scenario, label in (("real", "Original data"), ("real_augmented", "Augmented original data")):
        mean, per_seed = _seed_mean(_values(recs, f"dice_unet@{scenario}", dataset=SEG))
        assert rows.loc[label, dice_col] == pytest.approx(mean, rel=1e-12)
        assert rows.loc[label, "n"] == len(per_seed) and np.isnan(rows.loc[label, fd_col])
    for gan in SEG_GANS:
        fds = _values(recs, "fd_unet", dataset=SEG, gan=gan)
        best_rec, best_fd = min(fds, key=lambda p: p[1])
        assert rows.loc[gan, fd_col] == best_fd
        assert rows.loc[gan, "run"] == best_rec["training_id"] and rows.loc[gan, "n"] == len(fds)
        dice = {d["train_on"]: d["value"] for d in best_rec["downstream"]}
        assert rows.loc[gan, dice_col] == dice["synthetic"]
        assert rows.loc[f"Orig. data + {gan}", dice_col] == dice["real+synthetic"]
    assert len(frame) == 2 + 2 * len(SEG_GANS)


def test_delentropy_fd_vs_size_means_and_cis(report, store):
    frame = _table(report, "delentropy_fd_vs_size", "delentropy_fd_vs_size").frame
    seg = frame[frame["dataset"] == SEG]
    assert len(seg) == len(SEG_GANS) * len(SIZES)
    for _, row in seg.iterrows():
        vals = np.array([v for _, v in _values(store["records"], "fd_unet", dataset=SEG, gan=row["gan"],
                                                train_size=int(row["train_size"]))])
        assert len(vals) == len(SEG_SEEDS) == row["n_seeds"]
        assert row["fd_unet mean"] == pytest.approx(np.mean(vals), rel=1e-12)
        lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
        assert row["95% CI low"] == pytest.approx(lo, rel=1e-9) and row["95% CI high"] == pytest.approx(hi, rel=1e-9)
    dele = _table(report, "delentropy_fd_vs_size", "delentropy_per_dataset").frame.set_index("dataset")
    real = json.loads(next(m for m in store["records"][0]["metrics"] if m["metric"] == "delentropy_w1")
                      ["real_values"])
    assert dele.loc[SEG, "delentropy mean (bits)"] == pytest.approx(np.mean(real))
    assert dele.loc[SEG, "n images"] == len(real)


def test_dermatology_tables(report, store):
    t1 = _table(report, "dermatology_table1", "dermatology_table1").frame
    cls = t1[t1["Dataset"] == CLS].set_index("Model")
    assert cls.loc["stylegan2_cond", "Conditional"] == "yes" and cls.loc["stylegan2", "Conditional"] == "no"
    for gan in CLS_GANS:
        for short, metric in (("KID", "kid_unet"), ("FD", "fd_unet"), ("P", "precision_k3_unet"),
                              ("R", "recall_k3_unet"), ("PPL", "ppl_lpips")):
            col = next(c for c in cls.columns if c.startswith(f"{short} [{metric}]"))
            assert cls.loc[gan, col] == pytest.approx(_seed_mean(_values(store["records"], metric, gan=gan))[0])
    # segmentation GANs have no PPL: NaN, never a made-up number
    ppl_col = next(c for c in t1.columns if c.startswith("PPL"))
    assert t1[t1["Dataset"] == SEG][ppl_col].isna().all()

    t2 = _table(report, "dermatology_table2", "dermatology_table2").frame
    t2 = t2[t2["Dataset"] == CLS]
    acc_col = next(c for c in t2.columns if c.startswith("Accuracy [acc_effnet]"))
    auc_col = next(c for c in t2.columns if c.startswith("AUC [auc_effnet]"))
    for scenario in ("real", "real_augmented"):
        row = t2[t2["Scenario"] == scenario].iloc[0]
        assert row[acc_col] == pytest.approx(_seed_mean(_values(store["records"], f"acc_effnet@{scenario}",
                                                                dataset=CLS))[0])
    for gan in CLS_GANS:
        for scenario in ("synthetic", "real+synthetic"):
            row = t2[(t2["Scenario"] == scenario) & (t2["GAN"] == gan)].iloc[0]
            assert row[auc_col] == pytest.approx(_seed_mean(_values(store["records"], f"auc_effnet@{scenario}",
                                                                    gan=gan))[0])
    assert len(t2) == 2 + 2 * len(CLS_GANS)


def test_medigan_tables(report, store):
    t3 = _table(report, "medigan_tables", "medigan_table3").frame
    row = t3[(t3["Dataset"] == SEG) & (t3["Model"] == "wgan")].iloc[0]
    ratios = _values(store["records"], "r_fd_unet", gan="wgan")
    assert row["r_FD ↑"] == pytest.approx(_seed_mean(ratios)[0])
    fd_rr = [(r, next(m["fd_rr"] for m in r["metrics"] if m["metric"] == "r_fd_unet")) for r, _ in ratios]
    fd_rs = [(r, next(m["fd_rs_matched"] for m in r["metrics"] if m["metric"] == "r_fd_unet")) for r, _ in ratios]
    assert row["real-real (FD_rr)"] == pytest.approx(_seed_mean(fd_rr)[0])
    assert row["real-syn (FD_rs)"] == pytest.approx(_seed_mean(fd_rs)[0])
    assert row["#imgs"] == 50
    t4 = _table(report, "medigan_tables", "medigan_table4").frame
    assert any("minus_one_one" in c for c in t4.columns) and any("zero_one" in c for c in t4.columns)
    col = next(c for c in t4.columns if "zero_one" in c and c.endswith("r_FD"))
    row4 = t4[(t4["Dataset"] == SEG) & (t4["Model"] == "wgan")].iloc[0]
    assert row4[col] == pytest.approx(_seed_mean(_values(store["records"], "r_fd_unet01", gan="wgan"))[0])


def test_spearman_of_fd_and_dice(report, store):
    frame = _table(report, "metric_vs_downstream", "metric_vs_downstream").frame.set_index("dataset")
    recs = [r for r in store["records"] if r["dataset"] == SEG]
    fd = [v for _, v in _values(recs, "fd_unet")]
    dice = [v for _, v in _values(recs, "dice_unet@synthetic")]
    rho = stats.spearmanr(fd, dice).statistic
    row = frame.loc[SEG]
    assert row["spearman rho"] == pytest.approx(rho, abs=1e-12) and row["n runs"] == len(recs)
    assert row["bootstrap 95% CI low"] <= rho <= row["bootstrap 95% CI high"]
    assert row["bootstrap resamples"] == 300


def test_figures_exist_and_are_images(report):
    figures = {f.name: f for s in report["sections"].values() for f in s.figures}
    expected = {"delentropy_fd_vs_size", f"sensitivity_{SEG}", "size_curves", "delentropy_violins",
                "metric_vs_downstream", "fd_rr_vs_fd_rs", f"samples_{SEG}", "training_curves"}
    assert expected <= set(figures)
    for fig in figures.values():
        with Image.open(fig.png) as im:
            im.verify()
        with Image.open(fig.png) as im:
            assert im.size[0] > 200 and im.size[1] > 150
        assert fig.svg.read_text().lstrip().startswith("<?xml")
        assert fig.protocol["n records"] and fig.protocol["seeds"]
    assert "extractor" in figures["size_curves"].protocol
    # the sensitivity figure's swept key is the training-set size (the only hyperparameter that varies)
    assert "data.train_size" in figures[f"sensitivity_{SEG}"].caption
    # sample grids exist for the segmentation runs only; the classification runs' missing grids are a note
    notes = report["sections"]["sample_grids"].notes
    assert any(CLS in n and "no sample grid" in n for n in notes)
    assert f"samples_{CLS}" not in figures


def test_training_curve_uses_the_early_checkpoint_only_there(report, store):
    curves = next(f for f in report["sections"]["training_curves"].figures if f.name == "training_curves")
    assert curves.protocol["n records"] == "2"  # the training evaluated at steps 100 and 300
    # the early evaluation (FD + 500) is in no table: best-of-sweep and size means come from last-step records
    frame = _table(report, "delentropy_fd_vs_size", "delentropy_fd_vs_size").frame
    assert frame["fd_unet mean"].max() < 400


def test_written_files(report):
    out = report["out"]
    for sec in report["sections"].values():
        for t in sec.tables:
            for ext in ("md", "csv", "tex"):
                assert (out / "tables" / f"{t.name}.{ext}").is_file()
            tex = (out / "tables" / f"{t.name}.tex").read_text()
            assert "\\toprule" in tex and "\\bottomrule" in tex and "↓" not in tex
            csv = pd.read_csv(out / "tables" / f"{t.name}.csv")
            assert list(csv.columns) == list(t.frame.columns) and len(csv) == len(t.frame)
            assert t.protocol, t.name
    text = (out / "report.md").read_text()
    for sec in report["sections"].values():
        assert sec.title in text
        for f in sec.figures:
            assert f"figures/{f.name}.png" in text


def test_missing_ingredients_give_notes(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        rec = _record(rng, SEG, "dcgan", 100, seed, tmp_path / "runs", downstream_metrics=[])
        rec["metrics"] = [m for m in rec["metrics"] if m["base_metric"] not in ("delentropy", "r_fd")]
        write_record(tmp_path / "store", rec)
    sections = {s.key: s for s in build_report(tmp_path / "store", tmp_path / "out", n_boot=50)}
    assert sections["empirical_table2"].empty
    assert any("dice_" in n and "downstream=unet_seg" in n for n in sections["empirical_table2"].notes)
    assert any("acc_" in n for n in sections["dermatology_table2"].notes)
    assert sections["medigan_tables"].empty and any("r_fd" in n for n in sections["medigan_tables"].notes)
    assert any("delentropy" in n for n in sections["delentropy_violins"].notes)
    assert any("single training-set size" in n for n in sections["size_curves"].notes)
    assert any("more than one checkpoint" in n for n in sections["training_curves"].notes)
    assert any("sample grid" in n for n in sections["sample_grids"].notes)
    assert not list((tmp_path / "out" / "tables").glob("empirical_table2*"))  # never an empty table
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Not built: missing ingredients" in text and "downstream=unet_seg" in text
    with pytest.raises(ConfigError, match="valid sections"):
        build_report(tmp_path / "store", tmp_path / "out", sections=["empirical_table9"])
    with pytest.raises(ConfigError, match="match the filters"):
        build_report(tmp_path / "store", tmp_path / "out", {"dataset": {"name": "nope"}})
    with pytest.raises(ConfigError, match="fd_metric"):
        build_report(tmp_path / "store", tmp_path / "out", fd_metric="fid_inception")


def test_delentropy_metric_keeps_per_image_values():
    from medsynbench.metrics.delentropy import delentropy, to_gray_integers
    from medsynbench.metrics.image_metrics import delentropy_metric

    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand((6, 1, 16, 16), generator=g) * 2 - 1, torch.rand((5, 1, 16, 16), generator=g) * 2 - 1
    recs = {r["metric"]: r for r in delentropy_metric(real, fake, delentropy_keep_values=4)}
    w1 = recs["delentropy_w1"]
    expected = [delentropy(im) for im in to_gray_integers(real, 8)][:4]
    assert json.loads(w1["real_values"]) == [round(v, 4) for v in expected]
    assert len(json.loads(w1["fake_values"])) == 4 and w1["values_kept"] == "4 of 6 real, 4 of 5 synthetic"
    assert "real_values" not in recs["delentropy_ks"]  # kept once per evaluation


def test_cli_report(store, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "medsynbench", "report", f"paths.store_dir={store['store']}", f"out_dir={out}",
         f"+filter.dataset.name={SEG}", "sections=[empirical_table2,medigan_tables,training_curves]", "n_boot=50"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"-> {out}" in proc.stdout
    for key in ("empirical_table2: built", "medigan_tables: built", "training_curves: built"):
        assert key in proc.stdout, proc.stdout
    frame = pd.read_csv(out / "tables" / f"empirical_table2_{SEG}.csv")
    assert set(frame["Dataset"]) == {SEG}
    assert not (out / "tables" / f"empirical_table2_{CLS}.csv").exists()
    assert (out / "report.md").is_file()
    bad = subprocess.run([sys.executable, "-m", "medsynbench", "report", f"paths.store_dir={store['store']}",
                          f"out_dir={out}", "sections=[nope]"], cwd=REPO, capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode != 0 and "valid sections" in bad.stderr + bad.stdout


def test_medigan_table4_normalisation_swept_across_evaluations(tmp_path):
    """A sweep over an extractor's normalisation gives records with the same metric names that differ only in the
    preprocessing: Table 4 has one row per model, each normalisation's block from its own records."""
    rng = np.random.default_rng(3)
    records = []
    for gan in ("dcgan", "lsgan"):
        for normalise in ("minus_one_one", "zero_one"):
            rec = _record(rng, SEG, gan, 100, 0, tmp_path / "runs", downstream_metrics=[])
            rec["metrics"] = _fd_family(rng, "unet", normalise, 40)
            rec["evaluation_id"] = f"e-{normalise}"
            rec["config"]["metrics.extractors.0.normalise"] = normalise
            records.append(rec)
            write_record(tmp_path / "store", rec)
    sections = build_report(tmp_path / "store", tmp_path / "out", sections=["medigan_tables"])
    t4 = _table({"sections": {s.key: s for s in sections}}, "medigan_tables", "medigan_table4").frame
    assert len(t4) == 2 and not t4.duplicated(["Dataset", "Model"]).any()
    for rec in records:
        normalise = json.loads(rec["metrics"][0]["preprocessing"])["normalise"]
        col = next(c for c in t4.columns if f"· {normalise}" in c and c.endswith("r_FD"))
        expected = next(m["value"] for m in rec["metrics"] if m["metric"] == "r_fd_unet")
        assert t4.loc[t4["Model"] == rec["gan"], col].iloc[0] == pytest.approx(expected)

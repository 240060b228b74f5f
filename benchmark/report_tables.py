"""The report's data side: the selected records (:class:`ReportContext`), the protocol of every number, and the
tables in the four papers' layouts.

Every value in a table is a stored number (or a mean over seeds of stored numbers, computed as the leaderboard does:
per-seed means first, then mean / Student-t CI over distinct seeds). A table whose ingredients are missing is not
built; its section gets a note saying what is missing and how to produce it.

- empirical study, Table 2 (``empirical_table2``): per dataset, the best run of each GAN's sweep by the FD metric and
  that run's Dice (trained on its synthetic data), beside the original data (``@real``), the augmented original
  data (``@real_augmented``) and original + GAN data (``@real+synthetic`` of the best run);
- delentropy study, Figs. 2-3 (``delentropy_fd_vs_size``, figure in report_figures): FD per GAN and training-set
  size (mean, CI over seeds) and each dataset's delentropy distribution;
- dermatology study, Table 1 (``dermatology_table1``): KID / FD / precision / recall / PPL per model, conditional
  vs unconditional; Table 2 (``dermatology_table2``): classification accuracy / AUC per training scenario;
- medigan, Tables 3-4 (``medigan_tables``): FD_rr, FD_rs and r_FD per model, backbone (extractor) and normalisation.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsynbench.benchmark.leaderboard import _differing, _norm, _protocol, _seed_stats
from medsynbench.benchmark.report_types import ReportSection, ReportTable

# metric-name prefixes per base metric (``fid_*`` only for the standard Inception weights, see metrics/compute.py)
_PREFIXES = {"fd": ("fid_", "fd_"), "fd_rr": ("fid_rr_", "fd_rr_"), "r_fd": ("r_fid_", "r_fd_"), "kid": ("kid_",),
             "precision": ("precision_",), "recall": ("recall_",)}
SCENARIOS = ("real", "real_augmented", "synthetic", "real+synthetic")


def metric_suffix(metric: str, base: str) -> str | None:
    """``fd_unet`` -> ``unet``, ``fid_inception`` -> ``inception``, ``precision_k3_unet`` -> ``unet``."""
    for prefix in _PREFIXES.get(base, (base + "_",)):
        if metric.startswith(prefix):
            return re.sub(r"^k\d+_", "", metric[len(prefix):])
    return None


@dataclass
class ReportContext:
    """The records a report is built from: ``rows`` = ``metric_table`` rows (one per record and metric or
    downstream score ``<metric>@<train_on>``) after the filters, ``records`` = the full records by record id."""

    rows: pd.DataFrame
    records: dict[str, dict]
    ci: float = 0.95
    fd_metric: str | None = None          # None = the FD present (fid_inception first, else the most frequent fd_*)
    downstream_metric: str | None = None  # for the FD-vs-downstream scatter; None = <dice>@synthetic, else <acc>@...
    n_boot: int = 2000                    # bootstrap resamples of Spearman's rho
    seed: int = 0
    runs_dir: Path | None = None          # where run directories are looked for when a record's run_dir is missing

    def __post_init__(self):
        self.rows = self.rows.copy()
        self.rows["seed"] = self.rows["seed"].map(_norm)
        self.rows["n_train"] = self.rows["record_id"].map(self._n_train)
        self.rows["evaluated_step"] = self.rows["record_id"].map(lambda r: self.records[r].get("evaluated_step"))
        # Every record feeds the training curves; tables and the other figures use each training's evaluation at
        # its last evaluated step (an earlier checkpoint is a point of a curve, not another run).
        self.all_rows = self.rows
        last = self.rows.groupby("training_id")["evaluated_step"].transform("max")
        self.rows = self.rows[self.rows["evaluated_step"].isna() | (self.rows["evaluated_step"] == last)]
        if self.fd_metric is None:
            self.fd_metric = self._default_fd()
        elif self.fd_metric not in set(self.rows["metric"].dropna()):
            from medsynbench.benchmark.validate import ConfigError

            raise ConfigError(f"fd_metric={self.fd_metric!r} is not among the selected records' metrics (Fréchet "
                           f"distances there: {', '.join(self.metrics_of('fd')) or 'none'})")

    # --- selection ---------------------------------------------------------------------------------------------
    def _n_train(self, record_id: str):
        rec = self.records[record_id]
        if rec.get("train_size") is not None:
            return int(rec["train_size"])
        counts = (rec.get("data") or {}).get("counts") or {}
        return int(counts["train"]) if counts.get("train") is not None else np.nan

    def metrics_of(self, base: str) -> list[str]:
        """Metric names of one base metric (``fd``, ``kid``, ...), most frequent first."""
        if "base_metric" not in self.rows:
            return []
        sel = self.rows.loc[self.rows["base_metric"] == base, "metric"]
        return sel.value_counts().index.tolist()

    def downstream_metrics(self, prefix: str) -> list[str]:
        """Downstream score names (without ``@train_on``) starting with ``prefix`` (``dice_``, ``acc_``, ``auc_``)."""
        names = self.rows["metric"].dropna()
        names = names[names.str.contains("@", regex=False)].str.split("@").str[0]
        return [n for n in names.value_counts().index if n.startswith(prefix)]

    def _default_fd(self) -> str | None:
        fds = self.metrics_of("fd")
        return "fid_inception" if "fid_inception" in fds else (fds[0] if fds else None)

    def values(self, metric: str, all_steps: bool = False, **where) -> pd.DataFrame:
        """Rows of one metric (``value`` as float), optionally restricted to run columns (dataset=, gan=);
        ``all_steps``: also evaluations of earlier checkpoints."""
        rows = self.all_rows if all_steps else self.rows
        sel = rows[rows["metric"] == metric]
        for key, wanted in where.items():
            sel = sel[sel[key].map(_norm) == _norm(wanted)]
        sel = sel[sel["value"].notna()].copy()
        sel["value"] = sel["value"].astype(float)
        return sel

    def datasets(self) -> list[str]:
        return sorted(self.rows["dataset"].dropna().map(str).unique())

    def gans(self, dataset: str | None = None) -> list[str]:
        sel = self.rows if dataset is None else self.rows[self.rows["dataset"] == dataset]
        return sorted(sel["gan"].dropna().map(str).unique())

    def higher_is_better(self, metric: str) -> bool:
        sel = self.rows.loc[self.rows["metric"] == metric, "higher_is_better"].dropna()
        return bool(sel.iloc[0]) if len(sel) else False

    # --- labels and protocol -----------------------------------------------------------------------------------
    def label(self, metric: str) -> str:
        """Column header naming the protocol: FID only for the standard Inception weights, else FD (extractor)."""
        if metric == "fid_inception":
            return "FID (Inception, standard weights)"
        sel = self.rows[self.rows["metric"] == metric]
        ext = sorted({str(e) for e in sel.get("extractor", pd.Series(dtype=object)).dropna()})
        base = sel["base_metric"].dropna().iloc[0] if "base_metric" in sel and sel["base_metric"].notna().any() \
            else None
        names = {"fd": "FD", "kid": "KID", "precision": "precision", "recall": "recall", "fd_rr": "FD_rr",
                 "r_fd": "r_FD", "ppl": "PPL"}
        if base in names:
            return f"{names[base]} ({', '.join(ext) or metric})"
        return metric

    def protocol(self, rows: pd.DataFrame) -> dict[str, str]:
        """Extractor, weights sha256 (short), d, sample counts, preprocessing, image size, seeds, records."""
        out = {}
        metric_rows = rows[~rows["metric"].astype(str).str.contains("@", regex=False)] if len(rows) else rows
        for label, vals in _protocol(metric_rows).items():
            out[label] = ", ".join(vals)
        if "preprocessing" in rows:
            pre = sorted({str(p) for p in rows["preprocessing"].dropna()})
            if pre:
                out["preprocessing"] = " | ".join(pre)
        for key, label in (("cfg.data.image_size", "image size"), ("cfg.data.resize_method", "resize"),
                           ("cfg.data.intensity", "intensity")):
            if key in rows:
                vals = sorted({_norm(v) for v in rows[key]} - {"null"})
                if vals:
                    out[label] = ", ".join(vals)
        ds = rows[rows["metric"].astype(str).str.contains("@", regex=False)] if len(rows) else rows
        if len(ds) and "model" in ds:
            models = sorted({str(m) for m in ds["model"].dropna()})
            if models:
                out["downstream model"] = ", ".join(models)
        seeds = sorted({s for s in rows["seed"]}, key=lambda s: (len(s), s))
        out["seeds"] = ", ".join(seeds)
        out["n records"] = str(rows["record_id"].nunique())
        return out

    def pooled_note(self, rows: pd.DataFrame, what: str, keep: tuple[str, ...] = ()) -> str | None:
        """A note naming the config keys that differ within ``rows`` (averaged over as if they were seeds)."""
        keys = [c.removeprefix("cfg.") for c in _differing(rows) if c.removeprefix("cfg.") not in keep]
        if not keys:
            return None
        return f"{what} pools runs that differ in {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"


def seed_mean(values: pd.DataFrame, level: float) -> dict:
    """Mean / std / Student-t CI over distinct seeds (per-seed means first), as the leaderboard computes them."""
    return _seed_stats(values["value"], values["seed"], level)


# --- empirical study, Table 2 --------------------------------------------------------------------------------------

def empirical_table2(ctx: ReportContext) -> ReportSection:
    sec = ReportSection("empirical_table2", "Empirical study, Table 2: best-of-sweep FD and Dice per GAN",
                        "Per dataset and GAN the run with the best FD among the selected runs (the GAN's sweep), "
                        "with the Dice of a U-Net trained on that run's synthetic pairs and tested on real test data; "
                        "rows for the original data, augmented original data and original + GAN data.")
    fd = ctx.fd_metric
    dice = next(iter(ctx.downstream_metrics("dice_")), None)
    if fd is None:
        sec.notes.append("no Fréchet-distance metric in the selected records: evaluate with an extractor and "
                         "metrics.feature_metrics including fd")
    if dice is None:
        sec.notes.append("no segmentation downstream scores (dice_*) in the selected records: run with "
                         "downstream=unet_seg on a segmentation dataset")
    if fd is None or dice is None:
        return sec
    fd_col, dice_col = f"{ctx.label(fd)} ↓", f"Dice ({dice}) ↑"
    lower = not ctx.higher_is_better(fd)
    for dataset in ctx.datasets():
        rows, used = [], []
        if not any(ctx.values(f"{dice}@{on}", dataset=dataset).size for on in SCENARIOS):
            sec.notes.append(f"{dataset}: no {dice} scores (a classification dataset, or no downstream task): no "
                             f"Table 2 for it")
            continue
        for label, scenario in (("Original data", "real"), ("Augmented original data", "real_augmented")):
            vals = ctx.values(f"{dice}@{scenario}", dataset=dataset)
            if vals.empty:
                sec.notes.append(f"{dataset}: no records with downstream scores for train_on={scenario}: run with "
                                 f"downstream.train_on=[real,real_augmented,synthetic,real+synthetic]")
                continue
            st = seed_mean(vals, ctx.ci)
            rows.append({"Dataset": dataset, "Data": label, fd_col: np.nan, dice_col: st["mean"],
                         "Dice std": st["std"], "n": st["n_seeds"], "run": f"mean over {st['n_seeds']} seed(s)"})
            used.append(vals)
        best_runs = []
        for gan in ctx.gans(dataset):
            fds = ctx.values(fd, dataset=dataset, gan=gan)
            if fds.empty:
                continue
            best = fds.loc[fds["value"].idxmin() if lower else fds["value"].idxmax()]
            syn = ctx.values(f"{dice}@synthetic", dataset=dataset, gan=gan)
            syn = syn[syn["record_id"] == best["record_id"]]
            if syn.empty:
                sec.notes.append(f"{dataset}/{gan}: the best run {best['record_id']} has no {dice}@synthetic score")
            rows.append({"Dataset": dataset, "Data": gan, fd_col: best["value"],
                         dice_col: syn["value"].iloc[0] if len(syn) else np.nan, "Dice std": np.nan,
                         "n": len(fds), "run": best["training_id"]})
            used += [fds[fds["record_id"] == best["record_id"]], syn]
            best_runs.append((gan, best))
        for gan, best in best_runs:
            mix = ctx.values(f"{dice}@real+synthetic", dataset=dataset, gan=gan)
            mix = mix[mix["record_id"] == best["record_id"]]
            if mix.empty:
                sec.notes.append(f"{dataset}/{gan}: no {dice}@real+synthetic score for the best run "
                                 f"{best['training_id']}: run with downstream.train_on including real+synthetic")
                continue
            rows.append({"Dataset": dataset, "Data": f"Orig. data + {gan}", fd_col: np.nan,
                         dice_col: mix["value"].iloc[0], "Dice std": np.nan, "n": 1, "run": best["training_id"]})
            used.append(mix)
        if not best_runs:
            sec.notes.append(f"{dataset}: no run with {fd}: no GAN rows")
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        sec.tables.append(ReportTable(
            f"empirical_table2_{dataset}", frame,
            f"{dataset}: best-of-sweep {ctx.label(fd)} and U-Net Dice on the real test split (empirical study, "
            f"Table 2 layout). GAN rows: the run with the {'lowest' if lower else 'highest'} {fd} among n runs, and "
            f"its Dice when trained on its synthetic pairs; 'Orig. data + GAN': trained on real + that run's "
            f"synthetic pairs; original-data rows: mean (std) over n seeds.",
            ctx.protocol(pd.concat(used)) if used else {}))
    return sec


# --- delentropy study, Figs. 2-3 (table part) ----------------------------------------------------------------------

def size_stats(ctx: ReportContext, metric: str) -> pd.DataFrame:
    """Mean and Student-t CI over seeds of ``metric`` per (dataset, GAN, training-set size)."""
    vals = ctx.values(metric)
    out = []
    for (dataset, gan, n_train), g in vals.groupby(["dataset", "gan", "n_train"], dropna=False, sort=True):
        st = seed_mean(g, ctx.ci)
        out.append({"dataset": dataset, "gan": gan, "train_size": n_train, "mean": st["mean"], "ci_lo": st["ci_lo"],
                    "ci_hi": st["ci_hi"], "std": st["std"], "n_seeds": st["n_seeds"], "n_records": len(g)})
    return pd.DataFrame(out)


def delentropy_values(ctx: ReportContext) -> tuple[pd.DataFrame, list[str]]:
    """Per-image delentropy of the real test split per dataset and of each record's synthetic set (long format:
    dataset, gan ('real' for real data), record_id, value), from the ``real_values`` / ``fake_values`` the
    ``delentropy`` metric stores; and notes."""
    notes = []
    if "real_values" not in ctx.rows:
        if ctx.metrics_of("delentropy"):
            notes.append("the delentropy records hold summary distributions only (evaluated before per-image "
                         "values were stored): re-evaluate (medsynbench evaluate run_dir=...) to get violins")
        else:
            notes.append("no delentropy records: evaluate with metrics.image_metrics including delentropy")
        return pd.DataFrame(columns=["dataset", "gan", "record_id", "value"]), notes
    sel = ctx.rows[(ctx.rows["base_metric"] == "delentropy") & ctx.rows["real_values"].notna()]
    sel = sel.drop_duplicates("record_id")
    rows = []
    for dataset, g in sel.groupby("dataset", sort=True):
        reals = {str(v) for v in g["real_values"]}
        if len(reals) > 1:
            notes.append(f"{dataset}: the real test split's delentropy differs between records (other image size or "
                         f"preprocessing): the violin shows the first record's")
        first = g.iloc[0]
        rows += [{"dataset": dataset, "gan": "real", "record_id": first["record_id"], "value": v}
                 for v in json.loads(first["real_values"])]
        for _, r in g.iterrows():
            rows += [{"dataset": dataset, "gan": r["gan"], "record_id": r["record_id"], "value": v}
                     for v in json.loads(r["fake_values"])]
    return pd.DataFrame(rows, columns=["dataset", "gan", "record_id", "value"]), notes


def delentropy_tables(ctx: ReportContext, sec: ReportSection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Adds the FD-vs-size table and the per-dataset delentropy table to ``sec``; returns their data."""
    fd = ctx.fd_metric
    curves = size_stats(ctx, fd) if fd else pd.DataFrame()
    if fd is None:
        sec.notes.append("no Fréchet-distance metric in the selected records")
    elif curves.empty:
        sec.notes.append(f"no records with {fd}")
    else:
        vals = ctx.values(fd)
        for (dataset, gan, size), g in vals.groupby(["dataset", "gan", "n_train"], sort=True):
            note = ctx.pooled_note(g, f"{dataset}/{gan}/n={size:g}")
            if note:
                sec.notes.append(note + " (not only seeds)")
        few = curves.groupby(["dataset", "gan"])["train_size"].nunique()
        if (few < 2).all():
            sec.notes.append("every GAN has a single training-set size: sweep data.train_size (e.g. "
                             "data.train_size=100,200,400) for FD-vs-size curves")
        frame = curves.rename(columns={"mean": f"{fd} mean", "ci_lo": f"{round(ctx.ci * 100):g}% CI low",
                                       "ci_hi": f"{round(ctx.ci * 100):g}% CI high", "std": "std"})
        sec.tables.append(ReportTable(
            "delentropy_fd_vs_size", frame,
            f"{ctx.label(fd)} per GAN and training-set size (delentropy study, Fig. 3): mean, std and Student-t "
            f"{round(ctx.ci * 100):g}% CI over seeds. train_size = images in the training subset.",
            ctx.protocol(ctx.values(fd))))
    values, notes = delentropy_values(ctx)
    sec.notes += notes
    real = values[values["gan"] == "real"]
    if len(real):
        summary = real.groupby("dataset")["value"].agg(["mean", "std", "median", "count"]).reset_index()
        summary.columns = ["dataset", "delentropy mean (bits)", "std", "median", "n images"]
        sec.tables.append(ReportTable(
            "delentropy_per_dataset", summary,
            "Delentropy of each dataset's real test images (delentropy study, Fig. 2): mean, std, median over images.",
            ctx.protocol(ctx.rows[ctx.rows["record_id"].isin(real["record_id"])
                                  & (ctx.rows["base_metric"] == "delentropy")])))
    return curves, values


# --- dermatology study, Tables 1-2 ---------------------------------------------------------------------------------

def _conditional(ctx: ReportContext, record_id: str) -> bool:
    cfg = ctx.records[record_id].get("config") or {}
    flag = cfg.get("gan.conditional")
    if flag is None:
        return str(cfg.get("gan.name", "")).endswith("_cond")
    return bool(flag is True or str(flag).lower() == "true")


def dermatology_table1(ctx: ReportContext) -> ReportSection:
    sec = ReportSection("dermatology_table1", "Dermatology study, Table 1: KID / FD / precision / recall / PPL per "
                        "model", "Fidelity and diversity metrics per model, conditional vs unconditional; means over "
                        "seeds.")
    fd = ctx.fd_metric
    if fd is None:
        sec.notes.append("no Fréchet-distance metric in the selected records")
        return sec
    suffix = metric_suffix(fd, "fd")
    wanted = [("KID", next((m for m in ctx.metrics_of("kid") if metric_suffix(m, "kid") == suffix), None)),
              ("FD", fd),
              ("P", next((m for m in ctx.metrics_of("precision") if metric_suffix(m, "precision") == suffix), None)),
              ("R", next((m for m in ctx.metrics_of("recall") if metric_suffix(m, "recall") == suffix), None)),
              ("PPL", next(iter(ctx.metrics_of("ppl")), None))]
    for short, metric in wanted:
        if metric is None:
            how = ("add metrics.generator_metrics=[ppl] (style-based GANs; LPIPS weights via "
                   "metrics.generator_options.vgg_weights_path)" if short == "PPL"
                   else f"add it to metrics.feature_metrics for the extractor of {fd}")
            sec.notes.append(f"{short}: not measured in the selected records: {how}")
    metrics = [(s, m) for s, m in wanted if m is not None]
    rows, used = [], []
    for dataset in ctx.datasets():
        for gan in ctx.gans(dataset):
            base = ctx.values(fd, dataset=dataset, gan=gan)
            if base.empty:
                continue
            cond = sorted({_conditional(ctx, r) for r in base["record_id"]})
            row = {"Dataset": dataset, "Model": gan, "Conditional": " / ".join("yes" if c else "no" for c in cond)}
            for short, metric in metrics:
                vals = ctx.values(metric, dataset=dataset, gan=gan)
                arrow = "↑" if ctx.higher_is_better(metric) else "↓"
                row[f"{short} [{metric}] {arrow}"] = seed_mean(vals, ctx.ci)["mean"] if len(vals) else np.nan
                used.append(vals)
            row["n seeds"] = base["seed"].nunique()
            row["n runs"] = base["record_id"].nunique()
            note = ctx.pooled_note(base, f"{dataset}/{gan}")
            if note:
                sec.notes.append(note + " (not only seeds)")
            rows.append(row)
    if not rows:
        sec.notes.append(f"no records with {fd}")
        return sec
    frame = pd.DataFrame(rows).sort_values(["Dataset", "Conditional", "Model"], kind="stable").reset_index(drop=True)
    kinds = set(frame["Conditional"])
    if not ({"yes", "no"} <= kinds):
        sec.notes.append("only " + ("conditional" if kinds == {"yes"} else "unconditional") + " models among the "
                         "selected records: add e.g. gan=stylegan2_cond (or gan=stylegan2) for the comparison")
    sec.tables.append(ReportTable(
        "dermatology_table1", frame,
        "Fidelity (KID, FD, precision) and diversity (recall) in the feature space named in each header, and PPL "
        "(dermatology study, Table 1 layout); mean over seeds (per-seed means first).",
        ctx.protocol(pd.concat(used)) if used else {}))
    return sec


def dermatology_table2(ctx: ReportContext) -> ReportSection:
    sec = ReportSection("dermatology_table2", "Dermatology study, Table 2: classification accuracy / AUC per scenario",
                        "A classifier trained on real, augmented real, synthetic or real + synthetic images, always "
                        "tested on the real test split; means over seeds.")
    acc = next(iter(ctx.downstream_metrics("acc_")), None)
    auc = next(iter(ctx.downstream_metrics("auc_")), None)
    if acc is None and auc is None:
        sec.notes.append("no classification downstream scores (acc_* / auc_*) in the selected records: run with "
                         "downstream=efficientnet_cls on a labelled dataset (a conditional GAN labels its samples)")
        return sec
    metrics = [(name, m) for name, m in (("Accuracy", acc), ("AUC", auc)) if m is not None]
    rows, used = [], []
    for dataset in ctx.datasets():
        groups = []
        for scenario in ("real", "real_augmented"):
            groups.append((scenario, "-", {"dataset": dataset}))
        for gan in ctx.gans(dataset):
            for scenario in ("synthetic", "real+synthetic"):
                groups.append((scenario, gan, {"dataset": dataset, "gan": gan}))
        for scenario, gan, where in groups:
            row = {"Dataset": dataset, "Scenario": scenario, "GAN": gan}
            found = False
            for name, metric in metrics:
                vals = ctx.values(f"{metric}@{scenario}", **where)
                if len(vals):
                    st = seed_mean(vals, ctx.ci)
                    row[f"{name} [{metric}] ↑"], row[f"{name} std"] = st["mean"], st["std"]
                    row["n seeds"] = st["n_seeds"]
                    used.append(vals)
                    found = True
                else:
                    row[f"{name} [{metric}] ↑"], row[f"{name} std"] = np.nan, np.nan
            if found:
                rows.append(row)
            elif scenario in ("real", "real_augmented"):
                sec.notes.append(f"{dataset}: no records with classification scores for train_on={scenario}: run with "
                                 f"downstream.train_on=[real,real_augmented,synthetic,real+synthetic]")
    if not rows:
        sec.notes.append("no classification scores for any scenario in the selected records")
        return sec
    frame = pd.DataFrame(rows)
    sec.tables.append(ReportTable(
        "dermatology_table2", frame,
        "Classification on the real test split per training scenario (dermatology study, Table 2 layout): real = "
        "baseline, real_augmented = classic augmentation, synthetic = the GAN's samples only, real+synthetic = real "
        "plus the GAN's samples; mean and std over seeds (real and real_augmented: over every selected run of the "
        "dataset).", ctx.protocol(pd.concat(used))))
    return sec


# --- medigan, Tables 3-4 -------------------------------------------------------------------------------------------

def _normalisation(pre) -> str:
    try:
        return str(json.loads(pre).get("normalise", "unknown"))
    except (TypeError, ValueError, AttributeError):
        return "unknown" if pre is None or (isinstance(pre, float) and math.isnan(pre)) else str(pre)


def fd_triples(ctx: ReportContext) -> pd.DataFrame:
    """One row per (record, FD protocol): FD_rr, FD_rs (size-matched, from the r_FD record), FD_rs on all samples,
    r_FD, the subset size, extractor and normalisation. The protocol is the metric-name suffix (extractor and its
    options, e.g. ``metric_suffix``)."""
    out = []
    ratios = ctx.rows[ctx.rows.get("base_metric", pd.Series(dtype=object)) == "r_fd"]
    for _, r in ratios.iterrows():
        suffix = metric_suffix(r["metric"], "r_fd")
        rec = ctx.rows[ctx.rows["record_id"] == r["record_id"]]
        full = rec[(rec["base_metric"] == "fd") & (rec["metric"].map(lambda m: metric_suffix(m, "fd")) == suffix)]
        out.append({"record_id": r["record_id"], "training_id": r["training_id"], "dataset": r["dataset"],
                    "gan": r["gan"], "seed": r["seed"], "suffix": suffix, "extractor": r.get("extractor"),
                    "normalisation": _normalisation(r.get("preprocessing")),
                    "fd_rr": float(r["fd_rr"]), "fd_rs": float(r["fd_rs_matched"]), "r_fd": float(r["value"]),
                    "fd_rs_all": float(full["value"].iloc[0]) if len(full) else np.nan,
                    "subset_size": r.get("subset_size")})
    return pd.DataFrame(out)


def medigan_tables(ctx: ReportContext) -> tuple[ReportSection, pd.DataFrame]:
    sec = ReportSection("medigan_tables", "medigan, Tables 3-4: FD_rr, FD_rs and r_FD per backbone and normalisation",
                        "FD_rr between two disjoint random halves of the real test split (the lower bound), FD_rs "
                        "between one half and as many synthetic images, r_FD = FD_rr / FD_rs (1 = synthetic as "
                        "close as real data; medigan eq. 5); means over seeds.")
    triples = fd_triples(ctx) if "base_metric" in ctx.rows else pd.DataFrame()
    if triples.empty:
        sec.notes.append("no r_FD records (metric r_fd) in the selected records: evaluate with "
                         "metrics.feature_metrics including fd_rr and r_fd")
        return sec, triples
    rows_used = ctx.rows[ctx.rows["record_id"].isin(triples["record_id"])
                         & ctx.rows["base_metric"].isin(["fd", "fd_rr", "r_fd"])]
    primary = metric_suffix(ctx.fd_metric, "fd") if ctx.fd_metric else None
    if primary not in set(triples["suffix"]):
        primary = triples["suffix"].value_counts().index[0]
    agg = (triples.groupby(["dataset", "gan", "suffix", "extractor", "normalisation", "seed"], dropna=False)
           [["fd_rr", "fd_rs", "r_fd", "fd_rs_all", "subset_size"]].mean().reset_index())  # per seed first
    agg = (agg.groupby(["dataset", "gan", "suffix", "extractor", "normalisation"], dropna=False)
           .agg(fd_rr=("fd_rr", "mean"), fd_rs=("fd_rs", "mean"), r_fd=("r_fd", "mean"),
                fd_rs_all=("fd_rs_all", "mean"), subset_size=("subset_size", "first"), n_seeds=("seed", "nunique"))
           .reset_index())
    for (dataset, gan), g in triples.groupby(["dataset", "gan"]):
        note = ctx.pooled_note(ctx.rows[ctx.rows["record_id"].isin(g["record_id"])], f"{dataset}/{gan}")
        if note:
            sec.notes.append(note + " (not only seeds)")
    t3 = agg[agg["suffix"] == primary]
    frame3 = pd.DataFrame({"Dataset": t3["dataset"], "Model": t3["gan"], "#imgs": t3["subset_size"],
                           "real-real (FD_rr)": t3["fd_rr"], "real-syn (FD_rs)": t3["fd_rs"], "r_FD ↑": t3["r_fd"],
                           "FD_rs, all samples": t3["fd_rs_all"], "n seeds": t3["n_seeds"]}).reset_index(drop=True)
    ext = ", ".join(sorted({str(e) for e in t3["extractor"]}))
    sec.tables.append(ReportTable(
        "medigan_table3", frame3,
        f"FD_rr, FD_rs and r_FD per model in the {ext} feature space (metric suffix '{primary}'; medigan Table 3 "
        f"layout). #imgs = images per set (half the real test split, matched by as many synthetic images); "
        f"'FD_rs, all samples' = FD of all synthetic vs all real test images.",
        ctx.protocol(rows_used[[metric_suffix(m, b) == primary for m, b in
                                zip(rows_used["metric"], rows_used["base_metric"])]])))
    groups = agg[["suffix", "extractor", "normalisation"]].drop_duplicates()
    if len(groups) < 2:
        sec.notes.append("Table 4 (per backbone and normalisation) needs at least two feature spaces: add extractor "
                         "entries (e.g. inception_fid, or an extractor with normalise=zero_one and a metric_suffix) "
                         "to metrics.extractors")
    else:
        wide = None
        for _, g in groups.iterrows():
            same = ((agg["suffix"] == g["suffix"]) & (agg["extractor"].astype(str) == str(g["extractor"]))
                    & (agg["normalisation"] == g["normalisation"]))  # one feature space: one column block
            part = agg[same][["dataset", "gan", "fd_rr", "fd_rs", "r_fd"]]
            tag = f"{g['extractor']} · {g['normalisation']}" + (f" ({g['suffix']})" if g["suffix"] != g["extractor"]
                                                                 else "")
            part = part.rename(columns={"fd_rr": f"{tag}: real-real", "fd_rs": f"{tag}: real-syn",
                                        "r_fd": f"{tag}: r_FD"})
            wide = part if wide is None else wide.merge(part, on=["dataset", "gan"], how="outer")
        wide = wide.rename(columns={"dataset": "Dataset", "gan": "Model"})
        sec.tables.append(ReportTable(
            "medigan_table4", wide,
            "FD_rr, FD_rs and r_FD per backbone (extractor) and input normalisation (medigan Table 4 layout); "
            "mean over seeds. Empty cells: that model was not evaluated in that feature space.",
            ctx.protocol(rows_used)))
    return sec, triples

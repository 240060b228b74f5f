"""The report's figures (matplotlib Agg + seaborn; PNG and SVG), each drawn from stored records only.

- ``delentropy_fd_vs_size``: FD vs training-set size per GAN (mean, CI over seeds) beside each dataset's
  delentropy distribution (delentropy study, Figs. 2-3);
- ``sensitivity``: the chosen metric per value of each swept config key, per GAN (empirical study, Figs. 3-4);
- ``size_curves``: metrics vs training-set size with Student-t CIs over seeds;
- ``delentropy_violins``: per-image delentropy, real vs each GAN's synthetic images;
- ``metric_vs_downstream``: FD vs a downstream score with Spearman's rho and its bootstrap CI;
- ``fd_rr_vs_fd_rs``: FD_rr vs FD_rs (medigan Fig. 8);
- ``sample_grids``: the last sample grid of each model's best run (from its run directory);
- ``training_curves``: FD over checkpoints, where a training was evaluated at several steps.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from medsynbench.benchmark.leaderboard import _norm, is_volatile  # noqa: E402
from medsynbench.benchmark.report_tables import (  # noqa: E402
    ReportContext,
    delentropy_tables,
    fd_triples,
    metric_suffix,
    size_stats,
)
from medsynbench.benchmark.report_types import ReportFigure, ReportSection, ReportTable  # noqa: E402

# seaborn hands category labels such as "0.0002" to matplotlib, which logs a line per axis about it at INFO
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
STYLE = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "figure.dpi": 110, "savefig.dpi": 130, "svg.fonttype": "none"}
# config keys that are hyperparameters (swept keys of the sensitivity figure)
HYPER_PREFIXES = ("cfg.gan.", "cfg.train.", "cfg.data.", "cfg.precision")


def _save(fig, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return png, svg


def _figure(ctx: ReportContext, out_dir: Path, fig, name: str, caption: str, rows: pd.DataFrame) -> ReportFigure:
    png, svg = _save(fig, out_dir, name)
    return ReportFigure(name, png, svg, caption, ctx.protocol(rows))


def _palette(gans: list[str]) -> dict:
    colours = sns.color_palette("colorblind", max(len(gans), 3))
    return {g: colours[i % len(colours)] for i, g in enumerate(sorted(gans))}


def _curve(ax, stats_frame: pd.DataFrame, palette: dict, ylabel: str, points: pd.DataFrame | None = None) -> None:
    """Mean per GAN over training-set size with Student-t CI error bars over seeds (none with one seed); GANs are
    dodged slightly along x so that their bars do not hide each other; log x when sizes span 4x or more. ``points``
    (rows with gan, n_train, value): every record's value as a small hollow marker, so that an outlying seed that
    widens a CI is visible as such."""
    gans = sorted(stats_frame["gan"].unique())
    sizes = stats_frame["train_size"].dropna()
    log_x = len(sizes) and sizes.min() > 0 and sizes.max() / sizes.min() >= 4
    for i, gan in enumerate(gans):
        g = stats_frame[stats_frame["gan"] == gan].sort_values("train_size")
        shift = 1 + 0.025 * (i - (len(gans) - 1) / 2)
        x = g["train_size"] * shift if log_x else g["train_size"] + (shift - 1) * max(sizes.max(), 1)
        err = np.vstack([g["mean"] - g["ci_lo"], g["ci_hi"] - g["mean"]])
        ax.errorbar(x, g["mean"], yerr=np.nan_to_num(err, nan=0.0), marker="o", ms=4, capsize=3, lw=1.4,
                    color=palette[gan], label=gan)
        if points is not None and len(points):
            p = points[points["gan"] == gan]
            px = p["n_train"].astype(float) * shift if log_x else (p["n_train"].astype(float)
                                                                   + (shift - 1) * max(sizes.max(), 1))
            ax.scatter(px, p["value"], s=14, facecolors="none", edgecolors=palette[gan], alpha=0.8, lw=0.8,
                       zorder=3)
    if log_x:
        ax.set_xscale("log")
        ticks = sorted(sizes.unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("training-set size (images)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _legend(fig, palette: dict, title: str = "GAN") -> None:
    """One legend for the whole figure, above the panels."""
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.4, label=g) for g, c in palette.items()]
    fig.legend(handles=handles, title=title, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 6),
               frameon=False)


# --- delentropy study, Figs. 2-3 -----------------------------------------------------------------------------------

def delentropy_fd_vs_size(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("delentropy_fd_vs_size", "Delentropy study, Figs. 2-3: FD vs training-set size beside each "
                        "dataset's delentropy", "Left: FD per GAN over training-set size (mean and CI over seeds). "
                        "Right: the per-image delentropy of the dataset's real test images.")
    curves, values = delentropy_tables(ctx, sec)
    real = values[values["gan"] == "real"] if len(values) else values
    datasets = sorted(set(curves["dataset"]) if len(curves) else set())
    if not datasets:
        return sec
    palette = _palette(list(curves["gan"].unique()))
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 3.2 * len(datasets)), squeeze=False,
                                 gridspec_kw={"width_ratios": [2.2, 1]})
        for i, dataset in enumerate(datasets):
            _curve(axes[i, 0], curves[curves["dataset"] == dataset], palette, ctx.label(ctx.fd_metric),
                   ctx.values(ctx.fd_metric, dataset=dataset))
            axes[i, 0].set_title(f"{dataset}: {ctx.fd_metric} vs training-set size")
            r = real[real["dataset"] == dataset]
            if len(r):
                sns.violinplot(y=r["value"], ax=axes[i, 1], color="#9ecae1", inner="quartile", cut=0)
                axes[i, 1].set_title(f"{dataset}: delentropy of real images\nμ = {r['value'].mean():.3f}, σ = "
                                     f"{r['value'].std():.3f}, n = {len(r)}")
                axes[i, 1].set_ylabel("delentropy (bits)")
            else:
                axes[i, 1].text(0.5, 0.5, "no per-image delentropy\nin the records", ha="center", va="center",
                                transform=axes[i, 1].transAxes)
                axes[i, 1].set_axis_off()
        fig.tight_layout()
        _legend(fig, palette)
    used = ctx.values(ctx.fd_metric)
    sec.figures.append(_figure(ctx, out_dir, fig, "delentropy_fd_vs_size",
                               f"{ctx.label(ctx.fd_metric)} vs training-set size per GAN (mean over seeds, error "
                               f"bars: Student-t {round(ctx.ci * 100):g}% CI; none with one seed; hollow markers: "
                               f"single runs) beside the "
                               f"delentropy distribution of each dataset's real test images.", used))
    return sec


# --- hyperparameter sensitivity ------------------------------------------------------------------------------------

def swept_keys(rows: pd.DataFrame) -> list[str]:
    """Hyperparameter keys (gan.*, train.*, data.*, precision; not volatile, not the seed, not the GAN's name or
    class) with more than one value within at least one GAN's records."""
    keys = []
    for col in rows.columns:
        if not col.startswith(HYPER_PREFIXES) or is_volatile(col) or col in ("cfg.gan.name", "cfg.gan._target_"):
            continue
        if rows.groupby("gan")[col].agg(lambda s: s.map(_norm).nunique()).max() > 1:
            keys.append(col)
    return keys


def _sort_values(values: list[str]) -> list[str]:
    def key(v):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)
    return sorted(values, key=key)


def sensitivity(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("sensitivity", "Hyperparameter sensitivity (empirical study, Figs. 3-4)",
                        "The distribution of the FD metric over the runs with each value of each swept key, per GAN.")
    fd = ctx.fd_metric
    if fd is None:
        sec.notes.append("no Fréchet-distance metric in the selected records")
        return sec
    vals = ctx.values(fd)
    for dataset in ctx.datasets():
        d = vals[vals["dataset"] == dataset]
        keys = swept_keys(d)
        if not keys:
            sec.notes.append(f"{dataset}: no hyperparameter takes more than one value among the selected runs of a "
                             f"GAN: run a sweep (e.g. +sweep=cpu_small or +sweep=table1_<gan>)")
            continue
        shown = keys[:12]
        if len(keys) > 12:
            sec.notes.append(f"{dataset}: {len(keys)} swept keys, the first 12 shown")
        palette = _palette(list(d["gan"].unique()))
        ncol = min(3, len(shown))
        nrow = -(-len(shown) // ncol)
        with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
            fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
            for ax, key in zip(axes.flat, shown):
                data = d.assign(_x=d[key].map(_norm))
                order = _sort_values(list(data["_x"].unique()))
                sns.boxplot(data=data, x="_x", y="value", hue="gan", order=order, palette=palette, ax=ax,
                            fliersize=0, linewidth=0.8)
                sns.stripplot(data=data, x="_x", y="value", hue="gan", order=order, ax=ax, dodge=True, size=3,
                              palette={g: "0.2" for g in palette}, legend=False, alpha=0.7)
                ax.set_xlabel(key.removeprefix("cfg."))
                ax.set_ylabel(ctx.label(fd))
                ax.tick_params(axis="x", rotation=30 if max(len(o) for o in order) > 6 else 0)
                if ax is not axes.flat[0] and ax.get_legend():
                    ax.get_legend().remove()
            if axes.flat[0].get_legend():
                axes.flat[0].legend(title="GAN", fontsize=7)
            for ax in list(axes.flat)[len(shown):]:
                ax.set_axis_off()
            fig.suptitle(f"{dataset}: {fd} per value of each swept key (box: runs with that value; dots: runs)",
                         fontsize=10)
            fig.tight_layout()
        sec.figures.append(_figure(ctx, out_dir, fig, f"sensitivity_{dataset}",
                                   f"{dataset}: distribution of {ctx.label(fd)} per value of each swept "
                                   f"hyperparameter ({', '.join(k.removeprefix('cfg.') for k in shown)}), per GAN; "
                                   f"each box pools the runs with that value (other keys and seeds vary).", d))
    return sec


# --- metric vs training-set size -----------------------------------------------------------------------------------

def size_curves(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("size_curves", "Metrics vs training-set size", "Mean and Student-t CI over seeds per GAN.")
    fd = ctx.fd_metric
    suffix = metric_suffix(fd, "fd") if fd else None
    candidates = [fd, next((m for m in ctx.metrics_of("kid") if metric_suffix(m, "kid") == suffix), None)]
    dice = next(iter(ctx.downstream_metrics("dice_")), None) or next(iter(ctx.downstream_metrics("acc_")), None)
    if dice:
        candidates.append(f"{dice}@synthetic")
    metrics = [m for m in candidates if m and not ctx.values(m).empty]
    if not metrics:
        sec.notes.append("no FD, KID or downstream metric in the selected records")
        return sec
    per = {m: size_stats(ctx, m) for m in metrics}
    if all(s.groupby(["dataset", "gan"])["train_size"].nunique().max() < 2 for s in per.values()):
        sec.notes.append("every GAN has a single training-set size: sweep data.train_size for curves")
        return sec
    datasets = []
    for dataset in sorted(set().union(*(set(s["dataset"]) for s in per.values()))):
        if max(s[s["dataset"] == dataset].groupby("gan")["train_size"].nunique().max() for s in per.values()
               if (s["dataset"] == dataset).any()) < 2:
            sec.notes.append(f"{dataset}: a single training-set size: no curve")
        else:
            datasets.append(dataset)
    palette = _palette(list(set().union(*(set(s.loc[s["dataset"].isin(datasets), "gan"]) for s in per.values()))))
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(datasets)),
                                 squeeze=False)
        for i, dataset in enumerate(datasets):
            for j, m in enumerate(metrics):
                s = per[m][per[m]["dataset"] == dataset]
                if s.empty:
                    axes[i, j].text(0.5, 0.5, f"no {m}\nfor {dataset}", ha="center", va="center",
                                    transform=axes[i, j].transAxes)
                    axes[i, j].set_axis_off()
                    continue
                _curve(axes[i, j], s, palette, ctx.label(m) if "@" not in m else m)
                axes[i, j].set_title(f"{dataset}: {m}")
        fig.tight_layout()
        _legend(fig, palette)
    rows = pd.concat([ctx.values(m) for m in metrics])
    rows = rows[rows["dataset"].isin(datasets)]
    sec.figures.append(_figure(ctx, out_dir, fig, "size_curves",
                               f"{', '.join(metrics)} vs training-set size per GAN: mean over seeds and Student-t "
                               f"{round(ctx.ci * 100):g}% CI over seeds (error bars; none with one seed; GANs "
                               f"dodged slightly along x).", rows))
    return sec


# --- delentropy violins --------------------------------------------------------------------------------------------

def delentropy_violins(ctx: ReportContext, out_dir: Path) -> ReportSection:
    from medsynbench.benchmark.report_tables import delentropy_values

    sec = ReportSection("delentropy_violins", "Delentropy: real vs synthetic",
                        "Per-image delentropy of the real test images and of each GAN's synthetic images (pooled "
                        "over the GAN's runs).")
    values, notes = delentropy_values(ctx)
    sec.notes += notes
    if values.empty:
        return sec
    datasets = sorted(values["dataset"].unique())
    palette = {"real": "#bdbdbd", **_palette([g for g in values["gan"].unique() if g != "real"])}
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        groups = max(values[values["dataset"] == d]["gan"].nunique() for d in datasets)
        ncol = min(2, len(datasets))
        nrow = -(-len(datasets) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * max(4.0, 1.1 * groups + 1.5), 3.6 * nrow),
                                 squeeze=False)
        for ax in list(axes.flat)[len(datasets):]:
            ax.set_axis_off()
        for ax, dataset in zip(axes.flat, datasets):
            d = values[values["dataset"] == dataset]
            order = ["real"] + sorted(g for g in d["gan"].unique() if g != "real")
            sns.violinplot(data=d, x="gan", y="value", hue="gan", order=order, palette=palette, ax=ax, cut=0,
                           inner="quartile", legend=False)
            counts = d.groupby("gan")["record_id"].nunique()
            ax.set_xticks(range(len(order)), [f"{g}\n({counts.get(g, 0)} run{'s' if counts.get(g, 0) != 1 else ''})"
                                              if g != "real" else "real" for g in order])
            ax.set_xlabel("")
            ax.set_ylabel("delentropy (bits)")
            ax.set_title(dataset)
        fig.tight_layout()
    rows = ctx.rows[ctx.rows["record_id"].isin(values["record_id"]) & (ctx.rows["base_metric"] == "delentropy")]
    sec.figures.append(_figure(ctx, out_dir, fig, "delentropy_violins",
                               "Per-image delentropy (bits) of the real test images and of the synthetic images of "
                               "each GAN (pooled over its runs; the number of runs under each name); quartiles "
                               "dashed.", rows))
    return sec


# --- metric vs downstream score ------------------------------------------------------------------------------------

def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float, float,
                                                                                              float]:
    """Spearman's rho, its p-value and a paired percentile bootstrap CI (scipy.stats.bootstrap, seeded)."""
    res = stats.spearmanr(x, y)
    boot = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                           n_resamples=n_boot, confidence_level=level, method="percentile",
                           random_state=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue), float(boot.confidence_interval.low), \
        float(boot.confidence_interval.high)


def metric_vs_downstream(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("metric_vs_downstream", "Does FD predict the downstream score?",
                        "FD vs a downstream score of the same runs, with Spearman's rho and its bootstrap CI.")
    fd = ctx.fd_metric
    target = ctx.downstream_metric
    if target is None:
        base = next(iter(ctx.downstream_metrics("dice_")), None) or next(iter(ctx.downstream_metrics("acc_")), None)
        target = f"{base}@synthetic" if base else None
    if fd is None or target is None:
        sec.notes.append("needs an FD metric and downstream scores of the same runs: run with a downstream task "
                         "(downstream=unet_seg or efficientnet_cls)")
        return sec
    x = ctx.values(fd)[["record_id", "dataset", "gan", "value", "seed"]]
    y = ctx.values(target)[["record_id", "value"]]
    pairs = x.merge(y, on="record_id", suffixes=("_fd", "_down"))
    if pairs.empty:
        sec.notes.append(f"no run has both {fd} and {target}")
        return sec
    datasets = sorted(pairs["dataset"].unique())
    rows, palette = [], _palette(list(pairs["gan"].unique()))
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8), squeeze=False)
        for ax, dataset in zip(axes.flat, datasets):
            d = pairs[pairs["dataset"] == dataset]
            sns.scatterplot(data=d, x="value_fd", y="value_down", hue="gan", palette=palette, ax=ax, s=28)
            ax.set_xlabel(ctx.label(fd))
            ax.set_ylabel(target)
            n = len(d)
            if n >= 3 and d["value_fd"].nunique() > 1 and d["value_down"].nunique() > 1:
                rho, p, lo, hi = spearman_ci(d["value_fd"].to_numpy(), d["value_down"].to_numpy(), ctx.n_boot,
                                             ctx.seed, ctx.ci)
                ax.set_title(f"{dataset}: Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}], n = {n}")
            else:
                rho = p = lo = hi = np.nan
                ax.set_title(f"{dataset}: n = {n} (ρ needs ≥ 3 runs with distinct values)")
                sec.notes.append(f"{dataset}: Spearman's rho not computed: {n} run(s) with both {fd} and {target}")
            rows.append({"dataset": dataset, "x": fd, "y": target, "n runs": n, "spearman rho": rho, "p-value": p,
                         f"bootstrap {round(ctx.ci * 100):g}% CI low": lo,
                         f"bootstrap {round(ctx.ci * 100):g}% CI high": hi, "bootstrap resamples": ctx.n_boot})
            if ax.get_legend():
                ax.get_legend().remove()
        fig.tight_layout()
        _legend(fig, palette)
    used = pd.concat([ctx.values(fd), ctx.values(target)])
    sec.figures.append(_figure(ctx, out_dir, fig, "metric_vs_downstream",
                               f"{ctx.label(fd)} vs {target} (one point per run). Spearman's ρ with a paired "
                               f"percentile bootstrap {round(ctx.ci * 100):g}% CI ({ctx.n_boot} resamples of the "
                               f"runs, seed {ctx.seed}); n = runs.", used))
    sec.tables.append(ReportTable("metric_vs_downstream", pd.DataFrame(rows),
                                  f"Spearman's rank correlation of {fd} and {target} per dataset (scipy.stats."
                                  f"spearmanr), with a paired percentile bootstrap CI (scipy.stats.bootstrap).",
                                  ctx.protocol(used)))
    return sec


# --- FD_rr vs FD_rs ------------------------------------------------------------------------------------------------

def fd_rr_vs_fd_rs(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("fd_rr_vs_fd_rs", "FD_rr vs FD_rs (medigan, Fig. 8)",
                        "Each run's size-matched FD_rs against the lower bound FD_rr; on the diagonal a model is as "
                        "close to the real data as a second real sample.")
    triples = fd_triples(ctx) if "base_metric" in ctx.rows else pd.DataFrame()
    if triples.empty:
        sec.notes.append("no r_FD records (metric r_fd): evaluate with metrics.feature_metrics including fd_rr, r_fd")
        return sec
    spaces = sorted(triples["suffix"].unique())
    palette = _palette(list(triples["gan"].unique()))
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(spaces), figsize=(4.6 * len(spaces), 4.0), squeeze=False)
        for ax, space in zip(axes.flat, spaces):
            d = triples[triples["suffix"] == space]
            sns.scatterplot(data=d, x="fd_rr", y="fd_rs", hue="gan", style="dataset", palette=palette, ax=ax, s=32)
            lo = float(min(d["fd_rr"].min(), d["fd_rs"].min()))
            hi = float(max(d["fd_rr"].max(), d["fd_rs"].max()))
            ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=0.8, label="FD_rs = FD_rr")
            ax.set_xlim(d["fd_rr"].min() * 0.9, d["fd_rr"].max() * 1.1)  # free axes: FD_rr << FD_rs is common
            ax.set_ylim(min(0, d["fd_rs"].min()), d["fd_rs"].max() * 1.05)
            ax.set_xlabel("FD_rr (real-real)")
            ax.set_ylabel("FD_rs (real-synthetic, size-matched)")
            ext = ", ".join(sorted({str(e) for e in d["extractor"]}))
            ax.set_title(f"{ext} · {', '.join(sorted(set(d['normalisation'])))}")
            if ax is axes.flat[len(spaces) - 1]:
                ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
            elif ax.get_legend():
                ax.get_legend().remove()
        fig.tight_layout()
    rows = ctx.rows[ctx.rows["record_id"].isin(triples["record_id"]) & (ctx.rows["base_metric"] == "r_fd")]
    sec.figures.append(_figure(ctx, out_dir, fig, "fd_rr_vs_fd_rs",
                               "FD_rr vs FD_rs per run (one panel per feature space); FD_rs on as many synthetic "
                               "images as each real half, so r_FD = FD_rr / FD_rs is the slope to the point.", rows))
    return sec


# --- sample grids --------------------------------------------------------------------------------------------------

def _run_dir(ctx: ReportContext, record_id: str) -> Path | None:
    rec = ctx.records[record_id]
    candidates = [Path(rec["run_dir"])] if rec.get("run_dir") else []
    if ctx.runs_dir is not None:
        candidates.append(Path(ctx.runs_dir) / rec["training_id"])
    return next((c for c in candidates if c.is_dir()), None)


def sample_grids(ctx: ReportContext, out_dir: Path) -> ReportSection:
    from PIL import Image

    sec = ReportSection("sample_grids", "Samples per model", "The last training sample grid (fixed latents) of each "
                        "model's best run by FD (or its newest run without FD), read from the run directory.")
    fd = ctx.fd_metric
    for dataset in ctx.datasets():
        panels = []
        for gan in ctx.gans(dataset):
            cand = ctx.values(fd, dataset=dataset, gan=gan) if fd else pd.DataFrame()
            if len(cand):
                best = cand.loc[cand["value"].idxmax() if ctx.higher_is_better(fd) else cand["value"].idxmin()]
                rid, why = best["record_id"], f"{fd} = {best['value']:.4g}"
            else:
                recs = ctx.rows[(ctx.rows["dataset"] == dataset) & (ctx.rows["gan"] == gan)]
                rid, why = recs.sort_values("recorded_at")["record_id"].iloc[-1], "newest run"
            run_dir = _run_dir(ctx, rid)
            grids = sorted((run_dir / "samples").glob("step_*.png")) if run_dir else []
            if not grids:
                where = run_dir / "samples" if run_dir else ctx.records[rid].get("run_dir") or "unknown run dir"
                sec.notes.append(f"{dataset}/{gan}: no sample grid for run {ctx.records[rid]['training_id']} "
                                 f"(looked in {where}; run directories are under paths.runs_dir, pass "
                                 f"paths.runs_dir= if they moved)")
                continue
            panels.append((gan, grids[-1], why, rid))
        if not panels:
            continue
        images = []
        for _, path, _, _ in panels:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        aspect = max(im.shape[0] / im.shape[1] for im in images)
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4 * aspect + 0.9), squeeze=False)
            for ax, image, (gan, path, why, rid) in zip(axes.flat, images, panels):
                ax.imshow(image)
                ax.set_title(f"{gan}\nstep {int(path.stem.removeprefix('step_'))} · {why}", fontsize=8)
                ax.set_axis_off()
            fig.suptitle(f"{dataset}: samples per model", fontsize=10)
            fig.tight_layout()
        rows = ctx.rows[ctx.rows["record_id"].isin([p[3] for p in panels])]
        rows = rows[rows["metric"] == fd] if fd and (rows["metric"] == fd).any() else rows
        sec.figures.append(_figure(ctx, out_dir, fig, f"samples_{dataset}",
                                   f"{dataset}: the last sample grid of each model's best run ("
                                   + "; ".join(f"{g}: {ctx.records[r]['training_id']} {p.name}"
                                               for g, p, _, r in panels) + ")", rows))
    if not sec.figures and not sec.notes:
        sec.notes.append("no records to take sample grids from")
    return sec


# --- training curves -----------------------------------------------------------------------------------------------

def training_curves(ctx: ReportContext, out_dir: Path) -> ReportSection:
    sec = ReportSection("training_curves", "Training curves: FD over checkpoints",
                        "FD of the same training evaluated at several checkpoint steps (one record per step).")
    fd = ctx.fd_metric
    vals = ctx.values(fd, all_steps=True) if fd else pd.DataFrame()
    if vals.empty:
        sec.notes.append("no FD metric in the selected records")
        return sec
    vals = vals[vals["evaluated_step"].notna()]
    steps = vals.groupby("training_id")["evaluated_step"].nunique()
    curves = vals[vals["training_id"].isin(steps[steps > 1].index)]
    if curves.empty:
        sec.notes.append("no training was evaluated at more than one checkpoint step: evaluate earlier checkpoints "
                         "(medsynbench evaluate run_dir=<run> step=<N>, with train.keep_checkpoints=true) to store "
                         "points of the curve (scripts/fd_over_checkpoints.py prints one without storing it)")
        return sec
    palette = _palette(list(curves["gan"].unique()))
    datasets = sorted(curves["dataset"].unique())
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.6), squeeze=False)
        for ax, dataset in zip(axes.flat, datasets):
            d = curves[curves["dataset"] == dataset]
            seen = set()
            for tid, g in d.groupby("training_id"):
                g = g.groupby("evaluated_step")["value"].mean().sort_index()
                gan = d.loc[d["training_id"] == tid, "gan"].iloc[0]
                ax.plot(g.index, g.values, marker="o", ms=3, color=palette[gan], alpha=0.8,
                        label=gan if gan not in seen else None)
                seen.add(gan)
            ax.set_xlabel("training step (checkpoint)")
            ax.set_ylabel(ctx.label(fd))
            ax.set_title(f"{dataset}: {fd} over training ({d['training_id'].nunique()} run(s))")
            ax.legend(title="GAN", fontsize=7)
        fig.tight_layout()
    sec.figures.append(_figure(ctx, out_dir, fig, "training_curves",
                               f"{ctx.label(fd)} at each evaluated checkpoint, one line per training run.", curves))
    return sec

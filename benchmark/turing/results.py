"""``medsynbench turing results``: tables and figures of a study's answers.

- per rater: accuracy, sensitivity (synthetic images called synthetic), specificity (real images called real), each
  with an exact Clopper-Pearson interval, and a two-sided exact binomial test of the accuracy against 50%
  (``scipy.stats.binomtest``); a pooled row over all answers (its test treats answers as independent);
- inter-rater agreement: Fleiss' kappa (``statsmodels``) over the images every rater answered;
- per image: how often it was taken for real (difficulty), its truth, source and class;
- per source (real, each model): answers, share called real (for a model: how often it fooled the raters);
- confidence vs correctness: accuracy per confidence level, with exact intervals.
Tables as Markdown and CSV, figures as PNG, everything also in ``results.json`` and one ``results.html``.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from medsynbench.benchmark.turing import db


def load(study_dir: str | Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(settings, images, answers joined with truth and rater name)."""
    conn = db.connect(study_dir)
    try:
        settings = db.settings(conn)
        images = pd.read_sql_query("SELECT id, position, truth, source, label, origin FROM images ORDER BY position",
                                   conn)
        answers = pd.read_sql_query(
            "SELECT r.name AS rater, a.image_id, a.answer, a.confidence, a.comment, a.elapsed_ms, a.revisions, "
            "i.truth, i.source, i.label FROM answers a JOIN raters r ON r.id = a.rater_id "
            "JOIN images i ON i.id = a.image_id ORDER BY r.id, i.position", conn)
        raters = pd.read_sql_query("SELECT name FROM raters ORDER BY id", conn)["name"].tolist()
    finally:
        conn.close()
    answers["correct"] = answers["answer"] == answers["truth"]
    settings["raters"] = raters
    return settings, images, answers


def proportion(k: int, n: int, level: float) -> tuple[float, float, float]:
    """(k/n, exact Clopper-Pearson interval) ; NaNs without data."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    ci = binomtest(int(k), int(n), 0.5).proportion_ci(confidence_level=level, method="exact")
    return k / n, float(ci.low), float(ci.high)


def rater_row(name: str, a: pd.DataFrame, level: float) -> dict:
    n, k = len(a), int(a["correct"].sum())
    acc, lo, hi = proportion(k, n, level)
    syn, real = a[a["truth"] == "synthetic"], a[a["truth"] == "real"]
    sens = proportion(int((syn["answer"] == "synthetic").sum()), len(syn), level)
    spec = proportion(int((real["answer"] == "real").sum()), len(real), level)
    return {"rater": name, "n": n, "correct": k, "accuracy": acc, "accuracy_ci_lo": lo, "accuracy_ci_hi": hi,
            "p_value": float(binomtest(k, n, 0.5).pvalue) if n else float("nan"),
            "sensitivity": sens[0], "sensitivity_ci_lo": sens[1], "sensitivity_ci_hi": sens[2],
            "specificity": spec[0], "specificity_ci_lo": spec[1], "specificity_ci_hi": spec[2],
            "mean_confidence": float(a["confidence"].mean()) if a["confidence"].notna().any() else float("nan")}


def per_rater(answers: pd.DataFrame, raters: list[str], level: float) -> pd.DataFrame:
    rows = [rater_row(r, answers[answers["rater"] == r], level) for r in raters]
    if len(raters) > 1:
        rows.append(rater_row("all raters (pooled)", answers, level))
    return pd.DataFrame(rows)


def fleiss(answers: pd.DataFrame, raters: list[str]) -> dict:
    """Fleiss' kappa over the images answered by every rater who answered anything (statsmodels)."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    active = [r for r in raters if (answers["rater"] == r).any()]
    counts = answers[answers["rater"].isin(active)].pivot_table(index="image_id", columns="answer", values="rater",
                                                                aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=sorted(set(db.ANSWERS) | set(counts.columns)), fill_value=0)
    counts = counts[counts.sum(axis=1) == len(active)]
    out = {"fleiss_kappa": float("nan"), "n_raters": len(active), "n_images": int(len(counts))}
    if len(active) >= 2 and len(counts):
        with np.errstate(invalid="ignore", divide="ignore"):
            out["fleiss_kappa"] = float(fleiss_kappa(counts.to_numpy(), method="fleiss"))
    return out


def per_image(images: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    g = answers.groupby("image_id")
    stats = pd.DataFrame({"n_answers": g.size(), "called_real": g["answer"].apply(lambda s: int((s == "real").sum())),
                          "mean_confidence": g["confidence"].mean()})
    table = images.set_index("id").join(stats).reset_index().rename(columns={"id": "image_id"})
    table["n_answers"] = table["n_answers"].fillna(0).astype(int)
    table["called_real"] = table["called_real"].fillna(0).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["share_called_real"] = table["called_real"] / table["n_answers"].replace(0, np.nan)
    table["accuracy"] = np.where(table["truth"] == "real", table["share_called_real"], 1 - table["share_called_real"])
    cols = ["image_id", "truth", "source", "label", "n_answers", "called_real", "share_called_real", "accuracy",
            "mean_confidence", "origin"]
    return table[cols].sort_values(["share_called_real", "truth"], ascending=[False, True], na_position="last")


def per_source(answers: pd.DataFrame, level: float) -> pd.DataFrame:
    rows = []
    for src, a in answers.groupby("source", sort=True):
        share, lo, hi = proportion(int((a["answer"] == "real").sum()), len(a), level)
        rows.append({"source": src, "truth": a["truth"].iloc[0], "n_images": a["image_id"].nunique(),
                     "n_answers": len(a), "share_called_real": share, "ci_lo": lo, "ci_hi": hi,
                     "accuracy": float(a["correct"].mean())})
    return pd.DataFrame(rows, columns=["source", "truth", "n_images", "n_answers", "share_called_real", "ci_lo",
                                       "ci_hi", "accuracy"])


def per_confidence(answers: pd.DataFrame, levels: int, level: float) -> pd.DataFrame:
    rows = []
    for conf in range(1, levels + 1):
        a = answers[answers["confidence"] == conf]
        acc, lo, hi = proportion(int(a["correct"].sum()), len(a), level)
        rows.append({"confidence": conf, "n": len(a), "correct": int(a["correct"].sum()), "accuracy": acc,
                     "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows)


def analyse(study_dir: str | Path, level: float = 0.95) -> dict:
    settings, images, answers = load(study_dir)
    raters = settings["raters"]
    result = {"settings": settings, "level": level, "n_answers": len(answers),
              "per_rater": per_rater(answers, raters, level), "agreement": fleiss(answers, raters),
              "per_image": per_image(images, answers), "per_source": per_source(answers, level),
              "per_confidence": per_confidence(answers, int(settings["confidence_levels"]), level),
              "comments": answers.loc[answers["comment"].notna() & (answers["comment"] != ""),
                                      ["rater", "image_id", "truth", "answer", "comment"]]}
    result["figures"] = figures(result)
    return result


# --- figures ---------------------------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def figures(result: dict) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, level, settings = {}, result["level"], result["settings"]
    table = result["per_rater"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(table) + 2), 3.2))
    x = np.arange(len(table))
    for dx, col, colour in ((-0.2, "accuracy", "C0"), (0.0, "sensitivity", "C1"), (0.2, "specificity", "C2")):
        v = table[col].to_numpy(float)
        err = np.vstack([v - table[f"{col}_ci_lo"].to_numpy(float), table[f"{col}_ci_hi"].to_numpy(float) - v])
        ax.errorbar(x + dx, v, yerr=err, fmt="o", capsize=3, color=colour, label=col)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance (50%)")
    ax.set_xticks(x, table["rater"], rotation=20, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"proportion ({round(level * 100)}% exact CI)")
    ax.set_title("Per rater")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out["per_rater"] = _png(fig)

    images = result["per_image"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1, 11)
    ax.hist([images.loc[images["truth"] == t, "share_called_real"].dropna() for t in ("real", "synthetic")],
            bins=bins, color=["C2", "C1"], label=["real images", "synthetic images"])
    ax.set_xlabel("share of raters who called the image real")
    ax.set_ylabel("images")
    ax.set_title("Per-image difficulty")
    ax.legend(fontsize=7)
    out["difficulty"] = _png(fig)

    conf = result["per_confidence"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ok = conf["n"] > 0
    v = conf.loc[ok, "accuracy"].to_numpy(float)
    ax.errorbar(conf.loc[ok, "confidence"], v, yerr=np.vstack([v - conf.loc[ok, "ci_lo"], conf.loc[ok, "ci_hi"] - v]),
                fmt="o-", capsize=3)
    for _, r in conf[ok].iterrows():
        ax.annotate(f"n={int(r['n'])}", (r["confidence"], r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(range(1, int(settings["confidence_levels"]) + 1))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Confidence vs correctness")
    out["confidence"] = _png(fig)
    return out


# --- output ----------------------------------------------------------------------------------------------------------
TABLES = ("per_rater", "per_source", "per_confidence", "per_image", "comments")


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    """For reading (Markdown, HTML): a proportion and its interval in one cell, ``0.375 [0.085, 0.755]``; numbers
    rounded (the CSV files keep every column at full precision)."""
    out = df.copy()
    for col in list(out.columns):
        lo, hi = (f"{col}_ci_lo", f"{col}_ci_hi") if f"{col}_ci_lo" in out else ("ci_lo", "ci_hi")
        if lo in out and hi in out and col in ("accuracy", "sensitivity", "specificity", "share_called_real") \
                and (lo.startswith(col) or col != "accuracy" or "share_called_real" not in out):
            out[col] = [("" if pd.isna(v) else f"{v:.3f} [{a:.3f}, {b:.3f}]") for v, a, b in
                        zip(out[col], out[lo], out[hi])]
            out = out.drop(columns=[lo, hi])
    for col in out.columns:
        if col == "p_value":
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        elif out[col].dtype.kind == "f":
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return out


def render_html(result: dict, standalone: bool = True) -> str:
    """The results page, figures embedded; ``standalone``: its CSS inside (a file), else linked from the server's
    /static/."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                      autoescape=select_autoescape(["html"]))
    figs = {name: f"data:image/png;base64,{base64.b64encode(data).decode()}"
            for name, data in result["figures"].items()}
    tables = {name: _fmt(result[name]).to_html(index=False, na_rep="", classes="data", border=0, escape=True)
              for name in TABLES}
    css = (Path(__file__).parent / "static" / "style.css").read_text() if standalone else None
    return env.get_template("results.html").render(
        s=result["settings"], css=css, kappa=agreement_text(result["agreement"]), tables=tables, figs=figs,
        n_answers=result["n_answers"], level=round(result["level"] * 100))


def write_results(study_dir: str | Path, out_dir: str | Path | None = None, level: float = 0.95) -> dict:
    """Write tables (``<name>.md``, ``<name>.csv``), figures (``figures/<name>.png``), ``results.json`` and
    ``results.html`` to ``out_dir`` (default ``<study_dir>/results``); returns the analysis and the folder."""
    from medsynbench.io import atomic_write_bytes, atomic_write_json

    out = Path(out_dir) if out_dir else Path(study_dir) / "results"
    result = analyse(study_dir, level)
    for name in TABLES:
        df = result[name]
        atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())
        atomic_write_bytes(out / f"{name}.md", (_fmt(df).to_markdown(index=False) if len(df) else "(none)\n")
                           .encode())
    a = result["agreement"]
    atomic_write_bytes(out / "agreement.md", (agreement_text(a) + "\n").encode())
    for name, data in result["figures"].items():
        atomic_write_bytes(out / "figures" / f"{name}.png", data)
    atomic_write_bytes(out / "results.html", render_html(result).encode())
    atomic_write_json(out / "results.json", {
        "settings": result["settings"], "level": level, "n_answers": result["n_answers"], "agreement": a,
        **{name: json.loads(result[name].to_json(orient="records")) for name in TABLES}})
    return {"result": result, "out_dir": out}


def agreement_text(a: dict) -> str:
    if a["n_raters"] < 2 or not a["n_images"]:
        return f"Fleiss' kappa: needs at least 2 raters who answered the same images ({a['n_raters']} rater(s) so far)"
    return (f"Fleiss' kappa = {a['fleiss_kappa']:.3f} over {a['n_images']} images answered by all {a['n_raters']} "
            "raters")


def summary_text(result: dict) -> str:
    t = _fmt(result["per_rater"])[["rater", "n", "accuracy", "p_value", "sensitivity", "specificity"]]
    return t.to_markdown(index=False) + "\n\n" + agreement_text(result["agreement"])

"""Per-round, per-client curves of federated / local-only / central runs, read from the results store records
(``record["federated"]``), and what the report shows of them: rounds for each client to reach a target FD, and the
final scores of each mode (table + FD-vs-round figure; ``medsynbench report`` section ``federated_curves``)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

MODEL_OF_MODE = {"flower": "global", "local_only": "local", "central": "central"}
MODE_LABEL = {"flower": "federated (global model)", "local_only": "local only", "central": "central (pooled data)"}
COLUMNS = ["training_id", "mode", "strategy", "seed", "round", "step", "client", "model", "n_train", "metric", "value"]


def curve_rows(records) -> pd.DataFrame:
    """One row per (record, client or ``weighted``, model, metric) of every federated record (failed ones skipped)."""
    rows = []
    for rec in records:
        f = rec.get("federated")
        if not f or rec.get("status") != "completed":
            continue
        base = {"training_id": rec.get("training_id"), "mode": f["mode"], "strategy": f.get("strategy"),
                "seed": rec.get("seed"), "round": int(f["round"]), "step": rec.get("evaluated_step")}
        for row in f["clients"]:
            for m in row["metrics"]:
                rows.append(base | {"client": str(row["client"]), "model": row["model"], "n_train": row["n_train"],
                                    "metric": m["metric"], "value": m["value"]})
        for model, ms in f.get("aggregate", {}).items():
            for m in ms:
                rows.append(base | {"client": "weighted", "model": model, "n_train": None, "metric": m["metric"],
                                    "value": m["value"]})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.sort_values(["mode", "training_id", "round", "client", "model", "metric"], kind="stable")


def fd_metric(frame: pd.DataFrame) -> str | None:
    """The Fréchet distance of the curves (fid_inception first, else the most frequent fd_*; not FD∞ / FD_rr)."""
    names = frame["metric"].dropna()
    fds = names[names.str.match(r"^(fid_inception$|fd_(?!inf_|rr_))")]
    if fds.empty:
        return None
    return "fid_inception" if "fid_inception" in set(fds) else fds.value_counts().index[0]


def main_curves(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The curve of the model each mode trains (federated: global, local-only: local, central: central), per
    client and client-size-weighted, averaged over seeds: columns mode, client, round, value, n_seeds."""
    sel = frame[(frame["metric"] == metric) & (frame["model"] == frame["mode"].map(MODEL_OF_MODE))]
    keys = ["mode", "strategy", "client", "round"]
    sel = sel.assign(strategy=sel["strategy"].fillna("-"))
    return (sel.groupby(keys, dropna=False)["value"].agg(value="mean", n_seeds="count").reset_index()
            .sort_values(keys, kind="stable"))


def rounds_to_target(curves: pd.DataFrame, target: dict[str, float]) -> pd.DataFrame:
    """First round at which each mode's curve at each client is at or below ``target[client]`` (None: never)."""
    out = []
    for (mode, strategy, client), g in curves.groupby(["mode", "strategy", "client"], sort=True):
        t = target.get(client)
        hit = g[g["value"] <= t]["round"] if t is not None else pd.Series(dtype=float)
        out.append({"mode": mode, "strategy": strategy, "client": client, "target": t,
                    "round": int(hit.min()) if len(hit) else None})
    return pd.DataFrame(out, columns=["mode", "strategy", "client", "target", "round"])


def default_targets(curves: pd.DataFrame, slack: float = 0.10) -> dict[str, float]:
    """Per client: the best final value any mode reaches there, plus ``slack`` (10%): "within 10% of the best"."""
    last = curves[curves["round"] == curves.groupby(["mode", "strategy", "client"])["round"].transform("max")]
    return {c: float(v) * (1 + slack) for c, v in last.groupby("client")["value"].min().items()}


def summary_tables(frame: pd.DataFrame, metric: str | None = None, targets: dict[str, float] | None = None,
                   slack: float = 0.10) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(rounds-to-target table: one row per client, one column per mode; final-scores table: one row per client and
    metric, one column per mode; the targets used)."""
    metric = metric or fd_metric(frame)
    curves = main_curves(frame, metric)
    targets = targets or default_targets(curves, slack)
    col = lambda r: MODE_LABEL.get(r["mode"], r["mode"]) + (f" [{r['strategy']}]" if r["mode"] == "flower" else "")
    rt = rounds_to_target(curves, targets)
    rt["column"] = rt.apply(col, axis=1)
    conv = rt.pivot(index="client", columns="column", values="round")
    conv.insert(0, f"target {metric}", pd.Series(targets))
    main = frame[frame["model"] == frame["mode"].map(MODEL_OF_MODE)].assign(
        strategy=lambda d: d["strategy"].fillna("-"))
    last = main[main["round"] == main.groupby(["training_id"])["round"].transform("max")]
    last = last.groupby(["mode", "strategy", "client", "metric"])["value"].mean().reset_index()
    last["column"] = last.apply(col, axis=1)
    final = last.pivot_table(index=["client", "metric"], columns="column", values="value").reset_index()
    return conv.reset_index(), final, targets


def plot_curves(frame: pd.DataFrame, path: Path, metric: str | None = None, targets: dict[str, float] | None = None):
    """FD vs round: one panel per client (its training-set size in the title) and one for the size-weighted mean,
    one line per mode (federated global model, local only, central), the client's target as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or fd_metric(frame)
    curves = main_curves(frame, metric)
    clients = sorted((c for c in curves["client"].unique() if c != "weighted"), key=int) + ["weighted"]
    sizes = frame[frame["client"] != "weighted"].groupby("client")["n_train"].first()
    fig, axes = plt.subplots(1, len(clients), figsize=(3.6 * len(clients), 3.3), squeeze=False)
    for ax, client in zip(axes[0], clients):
        for (mode, strategy), g in curves[curves["client"] == client].groupby(["mode", "strategy"]):
            label = MODE_LABEL.get(mode, mode) + (f" [{strategy}]" if mode == "flower" else "")
            ax.plot(g["round"], g["value"], marker="o", ms=3, label=label)
        if targets and targets.get(client) is not None and math.isfinite(targets[client]):
            ax.axhline(targets[client], ls=":", c="grey", lw=1, label="target")
        ax.set_title(f"client {client} ({int(sizes[client])} train images)" if client != "weighted"
                     else "client-size-weighted mean", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel(f"{metric} (lower is better)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_section(ctx, out_dir: Path):
    """``medsynbench report`` section ``federated_curves``: convergence per client and final scores."""
    from medsynbench.benchmark.report_types import (
        ReportFigure,
        ReportSection,
        ReportTable,
    )

    sec = ReportSection("federated_curves", "Federated vs local-only vs central training: convergence per client",
                        "Per-round FD at each client's held-out split of the model each mode trains; rounds until "
                        "each client is within 10% of the best final FD any mode reaches there; final scores.")
    frame = curve_rows(ctx.records.values())
    metric = fd_metric(frame) if len(frame) else None
    if metric is None:
        sec.notes.append("no federated records (medsynbench train federated=<preset>, or +sweep=federated_vs_central)")
        return sec
    conv, final, targets = summary_tables(frame, metric)
    sec.tables.append(ReportTable("federated_rounds_to_target", conv, f"Rounds to reach the target {metric} per "
                                  "client (empty: not reached)", {"metric": metric}))
    sec.tables.append(ReportTable("federated_final_scores", final, "Final scores per client and mode (mean over "
                                  "seeds)", {"metric": metric}))
    png = plot_curves(frame, Path(out_dir) / "federated_curves.png", metric, targets)
    sec.figures.append(ReportFigure("federated_curves", png, None, f"{metric} vs round per client",
                                    {"metric": metric}))
    return sec

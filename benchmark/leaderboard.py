"""Leaderboards: mean ± std over seeds of one metric, grouped by any config keys. Reads the store only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.store import load_records, metric_table


def _column(df: pd.DataFrame, key: str) -> str:
    """Accept ``gan.name`` (config key), ``cfg.gan.name`` or a run-level column such as ``dataset``."""
    for candidate in (key, f"cfg.{key}"):
        if candidate in df.columns:
            return candidate
    known = sorted(c.removeprefix("cfg.") for c in df.columns)
    raise KeyError(f"group-by key {key!r} is not in the results store; known keys include: {', '.join(known[:40])}")


def leaderboard(records: list[dict], metric: str, group_by: list[str], include_failed: bool = False) -> pd.DataFrame:
    table = metric_table(records)
    if table.empty or "metric" not in table or not (table["metric"] == metric).any():
        available = sorted(set(table["metric"].dropna())) if "metric" in table else []
        raise KeyError(f"no records of metric {metric!r} in the results store; available: {available}")
    rows = table[table["metric"] == metric]
    if not include_failed:
        rows = rows[rows["status"] == "completed"]
    columns = [_column(rows, key) for key in group_by]
    higher = bool(rows["higher_is_better"].dropna().iloc[0]) if "higher_is_better" in rows else False
    provenance = [c for c in ("extractor", "weights", "model", "train_on") if c in rows.columns]
    grouped = rows.groupby(columns, dropna=False)
    out = grouped["value"].agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                               n_seeds="count").reset_index()
    for col in provenance:
        joined = grouped[col].agg(lambda v: ", ".join(sorted({str(x) for x in v.dropna()}))).values
        if any(joined):  # a column that says nothing for this metric is left out
            out[col] = joined
    for col in columns:  # a missing group value means "not set": for data.train_size, the whole split
        out[col] = out[col].astype(object).where(out[col].notna(), "all" if col.endswith("train_size") else "-")
    out = out.sort_values("mean", ascending=not higher).reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out.columns = [c.removeprefix("cfg.") for c in out.columns]
    out.attrs.update(metric=metric, higher_is_better=higher)
    return out


def to_markdown(board: pd.DataFrame) -> str:
    metric, higher = board.attrs.get("metric"), board.attrs.get("higher_is_better")
    shown = board.copy()
    shown.insert(shown.columns.get_loc("mean"), metric,
                 [f"{m:.4g} ± {s:.2g}" if np.isfinite(s) else f"{m:.4g}" for m, s in zip(board["mean"], board["std"])])
    shown = shown.drop(columns=["mean", "std"])
    arrow = "higher is better" if higher else "lower is better"
    return f"### Leaderboard: `{metric}` ({arrow}; mean ± std over seeds)\n\n" + shown.to_markdown(index=False) + "\n"


def write_leaderboard(store_dir: str | Path, out_dir: str | Path, metric: str, group_by: list[str],
                      include_failed: bool = False) -> tuple[pd.DataFrame, str, Path]:
    board = leaderboard(load_records(store_dir), metric, group_by, include_failed)
    text = to_markdown(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = metric.replace("@", "_at_").replace("/", "_").replace("+", "_plus_")
    board.to_csv(out_dir / f"{safe}.csv", index=False)
    (out_dir / f"{safe}.md").write_text(text)
    return board, text, out_dir / f"{safe}.md"

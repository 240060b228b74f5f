"""Leaderboards: statistics over seeds of one or more metrics from the results store (reads the store only).

Honest by construction:

- **Seeds are averaged only over runs that differ in nothing but the seed.** Without ``group_by`` the rows are
  grouped by every config key whose value differs among the selected records (after ``where`` filters, completed
  runs, requested metrics), except the keys in ``VOLATILE_KEYS`` (paths, device, progress bars, ``seed`` ...);
  dataset and GAN name are always shown. With an explicit ``group_by`` every key that still differs *within* a row
  is reported as pooled (Markdown header, CSV/JSON sidecar).
- ``n_seeds`` counts distinct seeds; several records of one seed in a row (re-evaluations with the same config)
  are averaged into that seed's value first. Records sharing a ``record_id`` are deduplicated (newest
  ``recorded_at`` wins).
- Per metric: mean, std (ddof=1) and a Student-t confidence interval over seeds (``ci``, default 95 %), n_seeds,
  n_records, n_warn (records carrying a warning, e.g. a small-sample warning; marked ``†`` with a footnote quoting
  it), and per row the number of seeds whose record is flagged ``collapsed`` (marked ``✗``).
- Full precision in the CSV, 4 significant digits in fixed notation in the Markdown. Files are named
  ``<metrics>-<hash of (metrics, grouping, filters, ...)>`` so a new grouping never overwrites another's table.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.store import VOLATILE_KEYS as STORE_VOLATILE_KEYS
from benchmark.store import RUN_COLUMNS, load_records, metric_table

# Config keys that never define a group (a key matches an entry equal to it or below it: "paths" = paths.*).
# ``seed`` is what is averaged. Shared with the store / run id logic.
VOLATILE_KEYS = STORE_VOLATILE_KEYS + ("evaluate", "seed")  # the seed is what rows average over
# Run-level columns that are the same thing as a config key (never reported as grouped and pooled at once).
_ALIASES = {"dataset": "cfg.dataset.name", "gan": "cfg.gan.name", "train_size": "cfg.data.train_size",
            "seed": "cfg.seed", "experiment": "cfg.experiment_name"}
# Metric-record fields that describe the measurement protocol (shown in the header).
_PROTOCOL = (("extractor", "extractor"), ("weights_sha256", "weights sha256"), ("weights", "weights"),
             ("feature_dim", "d"), ("n_real", "n_real"), ("n_fake", "n_fake"), ("subset_size", "subset"),
             ("model", "model"), ("k", "k"))
_MARKS = "†‡§¶"
# Protocol fields that make values incomparable: rows differing in them are ranked separately.
_RANK_PROTOCOL = ("extractor", "weights sha256", "weights", "d", "n_real", "n_fake", "subset", "model")


def is_volatile(key: str) -> bool:
    key = key.removeprefix("cfg.")
    return any(key == v or key.startswith(v + ".") for v in VOLATILE_KEYS)


def _norm(v) -> str:
    """Canonical text of a value for comparing and grouping (None/NaN -> 'null', 64.0 -> '64')."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    return str(v)


def _column(df: pd.DataFrame, key: str, what: str = "group-by") -> str:
    """Accept ``gan.name`` (config key), ``cfg.gan.name`` or a run-level column such as ``dataset``."""
    for candidate in (key, f"cfg.{key}"):
        if candidate in df.columns:
            return candidate
    known = sorted({c.removeprefix("cfg.") for c in df.columns if c.startswith("cfg.") or c in RUN_COLUMNS})
    raise KeyError(f"{what} key {key!r} is not in the results store; known keys include: {', '.join(known[:60])}")


def _flat_filters(where: dict | None, prefix: str = "") -> dict:
    """``{"dataset": {"name": "x"}}`` (as Hydra builds ``filter.dataset.name=x``) -> ``{"dataset.name": "x"}``."""
    out = {}
    for k, v in (where or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flat_filters(v, key))
        else:
            out[key] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _apply_filters(table: pd.DataFrame, where: dict, include_failed: bool) -> pd.DataFrame:
    for key, wanted in where.items():
        col = _column(table, key, "filter")
        allowed = {_norm(w) for w in (wanted if isinstance(wanted, list) else [wanted])}
        table = table[table[col].map(_norm).isin(allowed)]
    if "status" not in where and not include_failed:
        table = table[table["status"] == "completed"]
    return table


def _display(col: str, v) -> str:
    text = _norm(v)
    return ("all" if col.endswith("train_size") else "-") if text == "null" else text


def _differing(rows: pd.DataFrame) -> list[str]:
    """Config keys (``cfg.*``, not volatile) whose value differs among ``rows``, in config order."""
    return [c for c in rows.columns if c.startswith("cfg.") and not is_volatile(c)
            and rows[c].map(_norm).nunique() > 1]


def _seed_stats(values: pd.Series, seeds: pd.Series, level: float) -> dict:
    """Per-seed means first (re-evaluations of one seed count once), then mean/std/Student-t CI over seeds."""
    per_seed = values.groupby(seeds.map(_norm)).mean()
    n = len(per_seed)
    mean = float(per_seed.mean()) if n else float("nan")
    std = float(per_seed.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * stats.sem(per_seed)) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci_lo": mean - half, "ci_hi": mean + half, "n_seeds": n}


def _ci_tag(level: float) -> str:
    return f"ci{round(level * 100):g}"


def _protocol(rows: pd.DataFrame) -> dict[str, list[str]]:
    out = {}
    for field, label in _PROTOCOL:
        if field == "weights" and "weights sha256" in out:
            continue
        if field in rows.columns:
            vals = sorted({_norm(v)[:12] if field == "weights_sha256" else _norm(v)
                           for v in rows[field] if _norm(v) != "null"})
            if vals:
                out[label] = vals
    return out


def leaderboard(records: list[dict], metric: str | list[str], group_by: list[str] | None = None,
                include_failed: bool = False, where: dict | None = None, ci: float = 0.95) -> pd.DataFrame:
    """One row per group, columns ``<metric>_mean/_std/_ciNN_lo/_ciNN_hi/_n_seeds/_n_records/_n_warn`` per metric
    and ``n_collapsed``; ranked by the first metric in its direction. Grouping, pooled keys, filters, protocol and
    footnotes are in ``board.attrs``.

    group_by: None = every differing non-volatile config key (plus dataset and GAN name); else the given keys
    (config keys like ``gan.name`` or run-level columns like ``dataset``). where: ``{key: value or [values]}`` on
    config keys or run-level columns (nested dicts are flattened to dotted keys).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if not metrics:
        raise ValueError("no metric requested")
    table = metric_table(records)
    available = sorted(set(table["metric"].dropna())) if "metric" in table else []
    missing = [m for m in metrics if m not in available]
    if missing:
        raise KeyError(f"no records of metric(s) {missing} in the results store; available: {available}")
    filters = _flat_filters(where)
    rows = _apply_filters(table[table["metric"].isin(metrics)], filters, include_failed)
    if rows.empty:
        raise KeyError(f"no {'records' if include_failed else 'completed records'} of {metrics} match the filters "
                       f"{filters}")
    rows = rows.copy()

    if group_by is None:  # every key that differs, dataset and GAN name always shown
        always = [_column(rows, k) for k in ("dataset.name", "gan.name") if k in rows or f"cfg.{k}" in rows]
        always = always or [c for c in ("dataset", "gan") if c in rows]
        columns = always + [c for c in _differing(rows) if c not in always]
    else:
        columns = [_column(rows, key) for key in group_by]
    grouped_aliases = set(columns) | {_ALIASES[c] for c in columns if c in _ALIASES}
    for col in columns:
        rows[col] = rows[col].map(lambda v, c=col: _display(c, v))
    groups = rows.groupby(columns, sort=False, dropna=False) if columns else [((), rows)]

    level, tag = ci, _ci_tag(ci)
    hib = rows["higher_is_better"] if "higher_is_better" in rows else pd.Series(np.nan, index=rows.index)
    higher = {m: bool(hib[rows["metric"] == m].dropna().iloc[0]) if hib[rows["metric"] == m].notna().any() else False
              for m in metrics}
    warnings: dict[tuple[str, str], str] = {}  # (metric, warning text) -> mark
    out, pooled_all = [], {}
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = {c.removeprefix("cfg."): v for c, v in zip(columns, key)}
        pooled = [c for c in _differing(g) if c not in grouped_aliases]
        for c in pooled:
            pooled_all.setdefault(c.removeprefix("cfg."), set()).update(g[c].map(_norm))
        row["pooled"] = ", ".join(c.removeprefix("cfg.") for c in pooled)
        for m in metrics:
            gm = g[g["metric"] == m]
            s = _seed_stats(gm["value"].astype(float), gm["seed"], level)
            warn = gm["warning"].dropna() if "warning" in gm else pd.Series(dtype=object)
            warn = warn[warn.astype(str).str.len() > 0]
            marks = []
            for text in sorted(set(warn.astype(str))):
                if (m, text) not in warnings:
                    i = len(warnings)
                    warnings[(m, text)] = _MARKS[i % len(_MARKS)] * (i // len(_MARKS) + 1)
                marks.append(warnings[(m, text)])
            proto = _protocol(gm)
            row.update({f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_{tag}_lo": s["ci_lo"],
                        f"{m}_{tag}_hi": s["ci_hi"], f"{m}_n_seeds": s["n_seeds"], f"{m}_n_records": len(gm),
                        f"{m}_n_warn": len(warn), f"_{m}_marks": "".join(marks),
                        f"_{m}_mixed": any(len(v) > 1 for v in proto.values()),
                        f"_{m}_proto": " · ".join(f"{k} {'|'.join(v)}" for k, v in proto.items()
                                                  if k in _RANK_PROTOCOL)})
        collapsed = g[g["collapsed"].map(lambda v: v is True or v == 1)] if "collapsed" in g else g.iloc[:0]
        row["n_collapsed"] = collapsed["seed"].map(_norm).nunique()
        row["n_seeds_total"] = g["seed"].map(_norm).nunique()
        reasons = collapsed["collapse_reasons"].dropna() if "collapse_reasons" in collapsed else []
        row["_collapse_reasons"] = sorted({str(r) for r in reasons if str(r)})
        out.append(row)

    board = pd.DataFrame(out)
    first = metrics[0]
    # Rank only comparable rows: one ranking per dataset and measurement protocol of the first metric.
    ds = next((c for c in ("dataset.name", "dataset") if c in board), None)
    board["ranked_within"] = (board[ds].astype(str) + " · " if ds else "") + board[f"_{first}_proto"]
    board = board.sort_values(f"{first}_mean", ascending=not higher[first], na_position="last", kind="stable")
    order = {p: i for i, p in enumerate(board["ranked_within"].drop_duplicates())}
    board = board.sort_values("ranked_within", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    ranks = board.groupby("ranked_within", sort=False).cumcount() + 1
    board.insert(0, "rank", ranks.where(board[f"{first}_mean"].notna()).astype("Int64"))  # no value, no rank
    if board["ranked_within"].nunique() == 1:
        board = board.drop(columns="ranked_within")
    if not board["pooled"].astype(bool).any():
        board = board.drop(columns="pooled")
    board.attrs.update(
        metrics=metrics, metric=first, higher_is_better=higher, ci=level,
        grouping="explicit" if group_by is not None else "automatic",
        group_by=[c.removeprefix("cfg.") for c in columns],
        pooled={k: sorted(v) for k, v in pooled_all.items()}, filters=filters, include_failed=include_failed,
        protocol={m: _protocol(rows[rows["metric"] == m]) for m in metrics},
        warnings=[{"metric": m, "mark": mark, "warning": text} for (m, text), mark in warnings.items()])
    return board


def fmt(x, sig: int = 4) -> str:
    """Fixed notation with ``sig`` significant digits, never an exponent (integer part kept whole)."""
    if x is None or not np.isfinite(x):
        return "–"
    if abs(x) >= 10 ** sig:
        return f"{x:.0f}"
    return np.format_float_positional(float(x), precision=sig, unique=False, fractional=False, trim="-")


def to_markdown(board: pd.DataFrame) -> str:
    a = board.attrs
    metrics, tag = a["metrics"], _ci_tag(a["ci"])
    shown = board[["rank", *[c for c in a["group_by"] if c in board]]].copy()
    for m in metrics:
        cells = []
        for _, r in board.iterrows():
            cell = fmt(r[f"{m}_mean"]) + (f" ± {fmt(r[f'{m}_std'], 2)}" if np.isfinite(r[f"{m}_std"]) else "")
            cell += (" " + r[f"_{m}_marks"]) if r[f"_{m}_marks"] else ""
            cells.append(cell + (" ‖" if r[f"_{m}_mixed"] else ""))
        arrow = "↑" if a["higher_is_better"][m] else "↓"
        shown[f"{m} {arrow}"] = cells
        level = f"{round(a['ci'] * 100):g}% CI"
        shown[f"{m} {level}" if len(metrics) > 1 else level] = [
            f"[{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) else "–" for lo, hi in
            zip(board[f"{m}_{tag}_lo"], board[f"{m}_{tag}_hi"])]
        shown[f"n ({m})" if len(metrics) > 1 else "n_seeds"] = board[f"{m}_n_seeds"].values
    if "ranked_within" in board:
        shown["ranked within"] = board["ranked_within"].values
    shown["collapsed"] = [f"✗ {c} of {n}" if c else "-" for c, n in zip(board["n_collapsed"], board["n_seeds_total"])]
    if "pooled" in board:
        shown["pooled"] = board["pooled"].values
    names = ", ".join(f"`{m}`" for m in metrics)
    direction = "higher" if a["higher_is_better"][metrics[0]] else "lower"
    title = (f"### Leaderboard: {names} (ranked by `{metrics[0]}`, {direction} is better; mean ± std over seeds, "
             f"Student-t {round(a['ci'] * 100):g}% CI, n = distinct seeds)")
    lines = [title, ""]
    if a["grouping"] == "automatic":
        lines.append("Grouping: automatic — rows differ in " + (", ".join(f"`{k}`" for k in a["group_by"]))
                     + "; only seeds are averaged.")
    else:
        lines.append("Grouping: " + ", ".join(f"`{k}`" for k in a["group_by"]) + ". " + (
            "**Pooled (differ within a row, averaged as if seeds): " + ", ".join(
                f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in a["pooled"].items()) + "**" if a["pooled"]
            else "Nothing else differs within a row."))
    if "ranked_within" in board:
        lines.append(f"**{board['ranked_within'].nunique()} separate rankings** (rank restarts per dataset and "
                     f"`{metrics[0]}` protocol, column *ranked within*): values of different rankings are not "
                     f"comparable.")
    if a["filters"]:
        lines.append("Filters: " + ", ".join(f"`{k}={v}`" for k, v in a["filters"].items()))
    for m in metrics:
        proto = a["protocol"][m]
        if proto:
            lines.append(f"Protocol `{m}`: " + " · ".join(f"{k} {' | '.join(v)}" for k, v in proto.items()))
    lines += ["", shown.to_markdown(index=False), ""]
    for w in a["warnings"]:
        n = int(sum(board[f"{w['metric']}_n_warn"]))
        lines.append(f"{w['mark']} `{w['metric']}` ({n} record(s) warn): {w['warning']}")
    if any(board[f"_{m}_mixed"].any() for m in metrics):
        lines.append("‖ the row pools records measured with different protocols (extractor weights or sample "
                     "counts, see the protocol line): not comparable as seeds")
    reasons = sorted({r for rs in board["_collapse_reasons"] for r in rs})
    if board["n_collapsed"].any():
        lines.append("✗ collapsed generator (seeds flagged by metrics.collapse.detect_collapse)"
                     + (": " + "; ".join(reasons[:5]) if reasons else ""))
    return "\n".join(lines).rstrip() + "\n"


def _public(board: pd.DataFrame) -> pd.DataFrame:
    return board[[c for c in board.columns if not c.startswith("_")]]


def output_stem(metrics: list[str], group_by: list[str] | None, where: dict | None, include_failed: bool,
                ci: float) -> str:
    """Readable prefix (the metric names) + a hash of everything that changes the table."""
    spec = json.dumps({"metrics": metrics, "group_by": group_by, "where": _flat_filters(where),
                       "include_failed": include_failed, "ci": ci}, sort_keys=True, default=str)
    safe = "+".join(m.replace("@", "_at_").replace("/", "_").replace("+", "_plus_") for m in metrics)[:100]
    return f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def write_leaderboard(store_dir: str | Path, out_dir: str | Path, metric: str | list[str],
                      group_by: list[str] | None = None, include_failed: bool = False, where: dict | None = None,
                      ci: float = 0.95) -> tuple[pd.DataFrame, str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` (full precision) and ``<stem>.json`` (grouping, pooled keys, filters,
    protocol, footnotes); returns (board, Markdown text, Markdown path)."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    group_by = None if group_by is None else list(group_by)
    board = leaderboard(load_records(store_dir), metrics, group_by, include_failed, where, ci)
    text = to_markdown(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / output_stem(metrics, group_by, where, include_failed, ci)
    _public(board).to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({**board.attrs, "files": {
        "markdown": stem.with_suffix(".md").name, "csv": stem.with_suffix(".csv").name}}, indent=2, default=str))
    return board, text, stem.with_suffix(".md")

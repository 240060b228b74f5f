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
- Per metric: mean, std (ddof=1) and a confidence interval over seeds (``ci``, default 95 %; ``ci_method``
  ``t`` = Student-t, the default, or ``bootstrap`` = seeded percentile bootstrap over the per-seed values), n_seeds,
  n_records, n_warn (records carrying a warning, e.g. a small-sample warning; marked ``†`` with a footnote quoting
  it), and per row the number of seeds whose record is flagged ``collapsed`` (marked ``✗``).
- Full precision in the CSV, 4 significant digits in fixed notation in the Markdown, LaTeX (booktabs) and HTML
  (one self-contained sortable page) outputs; every output but the CSV states the protocol (CI method,
  grouping, filters, extractor and weights, sample counts) in its header. Files are named
  ``<metrics>-<hash of (metrics, grouping, filters, ...)>`` so a new grouping never overwrites another's table.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.core import nanops
from scipy import stats

from medsynbench.benchmark.store import RUN_COLUMNS, load_records, metric_table  # noqa: F401  (load_records: callers)
from medsynbench.benchmark.store import VOLATILE_KEYS as STORE_VOLATILE_KEYS

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
                           for v in pd.unique(rows[field]) if _norm(v) != "null"})
            if vals:
                out[label] = vals
    return out


def _texts(col: pd.Series) -> np.ndarray:
    """``col.map(_norm)`` as an object array; fast for categoricals (each category once) and for columns that are
    already canonical text (the index's)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes, norm = _norm_codes(col)
        return norm[codes]
    if isinstance(col.dtype, pd.StringDtype):
        return col.fillna("null").to_numpy(dtype=object)
    if pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
        return np.asarray(col.astype(object).where(col.notna(), "null"), dtype=object)
    return np.asarray(col.map(_norm), dtype=object)


def _norm_codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(per-row index into ``texts``, ``texts``) of a categorical column: ``texts`` = the categories' canonical
    text, then "null" for missing values."""
    cats = col.cat.categories
    norm = np.array([_norm(c) for c in cats.tolist()] + ["null"], dtype=object)
    codes = col.cat.codes.to_numpy().astype(np.int64)
    codes[codes < 0] = len(cats)
    return codes, norm


def _factor(col: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer codes equal exactly where ``col.map(_norm)`` is equal (and the texts, for categoricals by code)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes, norm = _norm_codes(col)
        return pd.factorize(norm)[0][codes], None
    texts = _texts(col)
    return pd.factorize(texts)[0], texts


def _distinct_pairs(g: np.ndarray, texts: np.ndarray) -> list[tuple[int, str]]:
    """The distinct (group, text) pairs."""
    if not len(g):
        return []
    codes, uniq = pd.factorize(texts)
    pair = np.unique(g.astype(np.int64) * len(uniq) + codes)
    return list(zip((pair // len(uniq)).tolist(), np.asarray(uniq, dtype=object)[pair % len(uniq)].tolist()))


@cache
def _t_ppf(level: float, dof: int) -> float:
    return float(stats.t.ppf((1 + level) / 2, dof))


def _stats_of(per_seed: np.ndarray, level: float, ci: CI | None = None) -> tuple[float, float, float, float, int]:
    """``_seed_stats`` on the per-seed means (ordered by seed text): the same pandas/scipy reductions; returns
    (mean, std, ci_lo, ci_hi, n). The interval is Student-t (default) or ``ci``'s percentile bootstrap."""
    n = len(per_seed)
    mean = float(nanops.nanmean(per_seed, skipna=True)) if n else float("nan")
    std = float(nanops.nanstd(per_seed, skipna=True, ddof=1)) if n > 1 else float("nan")
    if ci is not None and ci.method == "bootstrap":
        lo, hi = bootstrap_ci(per_seed, level, ci.n_boot, ci.seed)
        return mean, std, lo, hi, n
    # stats.sem(per_seed) as scipy computes it (std with ddof=1 over sqrt(n)), without its per-call wrapper cost
    half = float(_t_ppf(level, n - 1) * (np.std(per_seed, ddof=1) / n ** 0.5)) if n > 1 else float("nan")
    return mean, std, mean - half, mean + half, n


CI_METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class CI:
    """How the confidence interval over seeds is computed: ``t`` (Student-t, the default) or ``bootstrap``
    (percentile bootstrap of the mean over the per-seed values: ``n_boot`` resamples drawn from
    ``numpy.random.default_rng(seed)``, the same seed for every row, so a row's interval depends only on its
    values)."""
    method: str = "t"
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.method not in CI_METHODS:
            raise ValueError(f"ci_method must be one of {list(CI_METHODS)}, got {self.method!r}")
        if self.method == "bootstrap" and int(self.n_boot) < 1:
            raise ValueError(f"n_boot must be a positive number of bootstrap resamples, got {self.n_boot!r}")

    def describe(self, level: float) -> str:
        pct = f"{round(level * 100):g}%"
        if self.method == "t":
            return f"Student-t {pct} CI"
        return f"percentile bootstrap {pct} CI ({self.n_boot} resamples, seed {self.seed})"


_BOOT_RNG_KW = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"  # scipy < 1.15


def bootstrap_ci(values, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``, ``method="percentile"``,
    resamples from ``numpy.random.default_rng(seed)``); NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return float("nan"), float("nan")
    if np.all(values == values[0]):  # every resample has the same mean (scipy warns and returns NaN here)
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, n_resamples=int(n_boot), method="percentile", confidence_level=level,
                          vectorized=True, **{_BOOT_RNG_KW: np.random.default_rng(seed)})
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rows_per_group(rows: pd.DataFrame, columns: list[str], metrics: list[str], grouped_aliases: set,
                    level: float, tag: str, ci: CI | None = None):
    """The board's rows (one dict per group, in order of first appearance), pooled values per key and warning
    marks; the per-group statistics of the original per-group loop, computed column-wise (identical numbers: the
    same groupby means per seed and the same reductions over the per-seed means)."""
    n = len(rows)
    if columns:
        gid = rows.groupby(columns, sort=False, dropna=False, observed=True).ngroup().to_numpy()
        n_groups = int(gid.max()) + 1 if n else 0
        first = np.full(n_groups, n, dtype=np.int64)
        np.minimum.at(first, gid, np.arange(n))
        keys = [tuple(rows[c].iloc[first].tolist()) for c in columns]
        keys = list(zip(*keys)) if keys else [()] * n_groups
    else:
        gid, n_groups, keys = np.zeros(n, dtype=np.int64), 1, [()]
    out = [{c.removeprefix("cfg."): v for c, v in zip(columns, key)} for key in keys]
    # pooled keys per group (= _differing(g) less the grouped keys): a code that differs from the group's first
    cand = [c for c in rows.columns if c.startswith("cfg.") and not is_volatile(c) and c not in grouped_aliases]
    order = np.argsort(gid, kind="stable")
    starts = np.searchsorted(gid[order], np.arange(n_groups))
    pooled_of = [[] for _ in range(n_groups)]
    first_seen: dict[str, tuple[int, int]] = {}
    for j, c in enumerate(cand):
        codes, texts = _factor(rows[c])
        sc = codes[order]
        lo = np.minimum.reduceat(sc, starts) if n else sc[:0]
        hi = np.maximum.reduceat(sc, starts) if n else sc[:0]
        differs = np.nonzero(lo != hi)[0]
        if len(differs):
            for gi in differs:
                pooled_of[gi].append(c)
            vals = (texts if texts is not None else _texts(rows[c]))[np.isin(gid, differs)]
            first_seen[c] = (int(differs[0]), j, set(vals.tolist()))
    pooled_all = {c.removeprefix("cfg."): first_seen[c][2]
                  for c in sorted(first_seen, key=lambda c: first_seen[c][:2])}
    for gi, row in enumerate(out):
        row["pooled"] = ", ".join(c.removeprefix("cfg.") for c in pooled_of[gi])
    # per (group, metric): statistics over seeds, warnings, protocol
    seeds = _texts(rows["seed"])
    metric = rows["metric"].to_numpy(dtype=object)
    values = rows["value"].astype(float).to_numpy()
    warn = rows["warning"] if "warning" in rows else None
    if warn is not None:
        present = warn.notna().to_numpy()
        wtext = np.full(n, "", dtype=object)
        wtext[present] = warn[present].astype(str).to_numpy(dtype=object)
        has_warn = present & (pd.Series(wtext).str.len().to_numpy() > 0)
    proto_fields = []
    for field, label in _PROTOCOL:
        if field in rows.columns:
            t = _texts(rows[field])
            if field == "weights_sha256":
                t = np.array([v[:12] for v in t], dtype=object) if len(t) else t
            proto_fields.append((field, label, t))
    warnings: dict[tuple[str, str], str] = {}
    per_metric = {}
    for m in metrics:
        sel = np.nonzero(metric == m)[0]
        g, s = gid[sel], seeds[sel]
        per_seed = pd.Series(values[sel]).groupby([g, s]).mean()  # sorted by group, then seed text
        pg = per_seed.index.get_level_values(0).to_numpy()
        pv = per_seed.to_numpy()
        bounds = np.searchsorted(pg, np.arange(n_groups + 1))
        n_rec = np.bincount(g, minlength=n_groups)
        n_warn = np.bincount(g[has_warn[sel]], minlength=n_groups) if warn is not None else np.zeros(n_groups, int)
        texts = [set() for _ in range(n_groups)]
        if warn is not None:
            for gi, text in zip(g[has_warn[sel]], wtext[sel][has_warn[sel]]):
                texts[gi].add(text)
        proto = [{} for _ in range(n_groups)]
        for field, label, t in proto_fields:
            found: dict[int, list] = {}
            for gi, v in _distinct_pairs(g, t[sel]):
                if v != "null":
                    found.setdefault(gi, []).append(v)
            for gi, vals in found.items():
                if field == "weights" and "weights sha256" in proto[gi]:
                    continue
                proto[gi][label] = sorted(vals)
        per_metric[m] = (pv, bounds, n_rec, n_warn, texts, proto)
    for gi, row in enumerate(out):
        for m in metrics:
            pv, bounds, n_rec, n_warn, texts, proto = per_metric[m]
            mean, std, lo, hi, k = _stats_of(pv[bounds[gi]:bounds[gi + 1]], level, ci)
            marks = []
            for text in sorted(texts[gi]):
                if (m, text) not in warnings:
                    i = len(warnings)
                    warnings[(m, text)] = _MARKS[i % len(_MARKS)] * (i // len(_MARKS) + 1)
                marks.append(warnings[(m, text)])
            p = proto[gi]
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_{tag}_lo": lo,
                        f"{m}_{tag}_hi": hi, f"{m}_n_seeds": k, f"{m}_n_records": int(n_rec[gi]),
                        f"{m}_n_warn": int(n_warn[gi]), f"_{m}_marks": "".join(marks),
                        f"_{m}_mixed": any(len(v) > 1 for v in p.values()),
                        f"_{m}_proto": " · ".join(f"{k} {'|'.join(v)}" for k, v in p.items() if k in _RANK_PROTOCOL)})
    # collapsed seeds per group (over all requested metrics' rows)
    if "collapsed" in rows:
        col = rows["collapsed"]
        is_c = col.to_numpy() if col.dtype == bool else col.map(lambda v: v is True or v == 1).to_numpy(dtype=bool)
    else:
        is_c = np.zeros(n, dtype=bool)
    n_total = np.bincount(np.array([gi for gi, _ in _distinct_pairs(gid, seeds)], dtype=np.int64),
                          minlength=n_groups)
    n_coll = np.bincount(np.array([gi for gi, _ in _distinct_pairs(gid[is_c], seeds[is_c])], dtype=np.int64),
                         minlength=n_groups)
    reasons = [set() for _ in range(n_groups)]
    if "collapse_reasons" in rows and is_c.any():
        has = is_c & rows["collapse_reasons"].notna().to_numpy()
        for gi, r in zip(gid[has], rows["collapse_reasons"].to_numpy(dtype=object)[has]):
            if str(r):
                reasons[gi].add(str(r))
    for gi, row in enumerate(out):
        row["n_collapsed"] = int(n_coll[gi])
        row["n_seeds_total"] = int(n_total[gi])
        row["_collapse_reasons"] = sorted(reasons[gi])
    return out, pooled_all, warnings



class UnknownMetricError(KeyError):
    """A requested metric has no records in the store; ``available`` lists the metric names that do (feature
    metrics and ``<downstream metric>@<trained on>``)."""

    def __init__(self, missing: list[str], available: list[str]):
        self.missing, self.available = list(missing), list(available)
        super().__init__(f"no records of metric(s) {self.missing} in the results store; available: {self.available}")

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0])


def leaderboard(records: list[dict] | pd.DataFrame, metric: str | list[str], group_by: list[str] | None = None,
                include_failed: bool = False, where: dict | None = None, ci: float = 0.95, ci_method: str = "t",
                n_boot: int = 2000, boot_seed: int = 0) -> pd.DataFrame:
    """One row per group, columns ``<metric>_mean/_std/_ciNN_lo/_ciNN_hi/_n_seeds/_n_records/_n_warn`` per metric
    and ``n_collapsed``; ranked by the first metric in its direction. Grouping, pooled keys, filters, protocol and
    footnotes are in ``board.attrs``.

    group_by: None = every differing non-volatile config key (plus dataset and GAN name); else the given keys
    (config keys like ``gan.name`` or run-level columns like ``dataset``). where: ``{key: value or [values]}`` on
    config keys or run-level columns (nested dicts are flattened to dotted keys). ``records`` may also be a table
    as ``metric_table`` (or ``store_index.metric_table_from_store``) returns it. ci_method: ``t`` (Student-t) or
    ``bootstrap`` (percentile bootstrap over the per-seed values, ``n_boot`` resamples, rng seeded by
    ``boot_seed``).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if not metrics:
        raise ValueError("no metric requested")
    interval = CI(str(ci_method), int(n_boot), int(boot_seed))
    table = records if isinstance(records, pd.DataFrame) else metric_table(records)
    available = sorted(set(table["metric"].dropna().unique())) if "metric" in table else []
    missing = [m for m in metrics if m not in available]
    if missing:
        raise UnknownMetricError(missing, available)
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
    level, tag = ci, _ci_tag(ci)
    hib = rows["higher_is_better"] if "higher_is_better" in rows else pd.Series(np.nan, index=rows.index)
    higher = {m: bool(hib[rows["metric"] == m].dropna().iloc[0]) if hib[rows["metric"] == m].notna().any() else False
              for m in metrics}
    out, pooled_all, warnings = _rows_per_group(rows, columns, metrics, grouped_aliases, level, tag, interval)
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
        metrics=metrics, metric=first, higher_is_better=higher, ci=level, ci_method=interval.method,
        ci_text=interval.describe(level), **({"n_boot": interval.n_boot, "boot_seed": interval.seed}
                                             if interval.method == "bootstrap" else {}),
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


def _shown(board: pd.DataFrame) -> pd.DataFrame:
    """The table as displayed (Markdown, LaTeX, HTML): mean ± std with warning marks, CI, n, collapsed, pooled."""
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
    return shown


def _ci_text(a: dict) -> str:
    return a.get("ci_text") or CI().describe(a["ci"])


def _title(board: pd.DataFrame) -> str:
    a = board.attrs
    metrics = a["metrics"]
    names = ", ".join(f"`{m}`" for m in metrics)
    direction = "higher" if a["higher_is_better"][metrics[0]] else "lower"
    return (f"Leaderboard: {names} (ranked by `{metrics[0]}`, {direction} is better; mean ± std over seeds, "
            f"{_ci_text(a)}, n = distinct seeds)")


def _header_lines(board: pd.DataFrame) -> list[str]:
    """Grouping, pooled keys, separate rankings, filters and each metric's protocol (Markdown inline markup)."""
    a = board.attrs
    metrics = a["metrics"]
    lines = []
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
    return lines


def _footnotes(board: pd.DataFrame) -> list[str]:
    """The marks explained: † (warnings quoted), ‖ (mixed protocols), ✗ (collapsed seeds)."""
    a = board.attrs
    metrics = a["metrics"]
    lines = []
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
    return lines


def _plain(line: str) -> str:
    """Markdown inline markup removed (for LaTeX and HTML, which mark up on their own)."""
    return line.replace("**", "").replace("`", "").replace("*ranked within*", "ranked within")


def to_markdown(board: pd.DataFrame) -> str:
    lines = [f"### {_title(board)}", "", *_header_lines(board)]
    lines += ["", _shown(board).to_markdown(index=False), ""]
    lines += _footnotes(board)
    return "\n".join(lines).rstrip() + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "±": r"$\pm$", "†": r"\dag{}", "‡": r"\ddag{}", "§": r"\S{}", "¶": r"\P{}",
          "✗": r"$\times$", "‖": r"$\|$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "—": "---",
          "∈": r"$\in$", "·": r"$\cdot$", "≤": r"$\leq$", "≥": r"$\geq$"}


_LATEX_NUMERIC = re.compile(r"^(\[?-?(\d|\.\d)|–$)")


def latex_escape(text) -> str:
    """Text for LaTeX: special characters escaped, the marks and symbols of the tables as LaTeX commands (so the
    file compiles with pdflatex and booktabs alone)."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(board: pd.DataFrame) -> str:
    """A booktabs table (``pandas Styler.to_latex(hrules=True)``): the header (ranking, CI method, grouping,
    filters, protocol) as the caption and as ``%`` comment lines, the marks' footnotes under the tabular."""
    shown = _shown(board)
    shown = shown.astype(object).where(shown.notna(), "–")
    cells = shown.map(latex_escape)
    cells.columns = [latex_escape(c) for c in shown.columns]
    header = [_plain(_title(board)), *(_plain(line) for line in _header_lines(board))]
    caption = " ".join(latex_escape(h if h.endswith(".") else h + ".") for h in header)
    numeric = "".join("r" if shown[c].map(lambda v: bool(_LATEX_NUMERIC.match(str(v)))).all() else "l"
                      for c in shown.columns)  # numbers, "mean ± std", "[lo, hi]" and "–" right-aligned
    body = cells.style.hide(axis="index").to_latex(hrules=True, caption=caption, position_float="centering",
                                                   environment="table", label="tab:leaderboard",
                                                   column_format=numeric)
    notes = _footnotes(board)
    if notes:
        foot = "\\par\\smallskip\n{\\footnotesize\n" + "\\\\\n".join(latex_escape(_plain(n)) for n in notes) + "\n}\n"
        body = body.replace("\\end{table}", foot + "\\end{table}")
    comments = "".join(f"% {h}\n" for h in header)
    return f"% medsynbench leaderboard (needs \\usepackage{{booktabs}})\n{comments}{body}"


def to_html(board: pd.DataFrame, out_path: str | Path, name: str = "leaderboard") -> Path:
    """One self-contained HTML page (benchmark/report_html.py): the table sortable, the CI method, grouping and
    filters in the page's protocol block, each metric's protocol under the caption and in the cells' tooltips,
    pooled keys and separate rankings as notes, the marks' footnotes under the table."""
    from medsynbench.benchmark.report_html import render_html
    from medsynbench.benchmark.report_types import ReportSection, ReportTable

    a = board.attrs
    lines = [_plain(line) for line in _header_lines(board)]
    first = a["metrics"][0]
    report_protocol = {"ranked by": f"{first} ({'higher' if a['higher_is_better'][first] else 'lower'} is better)",
                       "statistics": f"mean ± std over distinct seeds, {_ci_text(a)}",
                       "grouping": next(line for line in lines if line.startswith("Grouping")).removeprefix(
                           "Grouping: ")}
    if a["filters"]:
        report_protocol["filters"] = ", ".join(f"{k}={v}" for k, v in a["filters"].items())
    if a.get("include_failed"):
        report_protocol["include_failed"] = "true (diverged/failed runs included)"
    by_text: dict[str, list[str]] = {}  # metrics measured the same way share one entry
    for m in a["metrics"]:
        text = " · ".join(f"{k} {' | '.join(v)}" for k, v in a["protocol"][m].items())
        if text:
            by_text.setdefault(text, []).append(m)
    table_protocol = {", ".join(ms): text for text, ms in by_text.items()}
    notes = [line for line in lines if not line.startswith(("Grouping", "Filters", "Protocol"))]
    if a["pooled"]:
        notes.append("Pooled keys (differ within a row, averaged as if seeds): " + "; ".join(
            f"{k} ∈ {{{', '.join(v)}}}" for k, v in a["pooled"].items()))
    section = ReportSection(key=name, title="Leaderboard: " + ", ".join(a["metrics"]), notes=notes, tables=[
        ReportTable(name=name, frame=_shown(board), caption=_plain(_title(board)), protocol=table_protocol,
                    notes=[_plain(n) for n in _footnotes(board)])])
    return render_html("medsynbench leaderboard: " + ", ".join(a["metrics"]), [section], Path(out_path),
                       protocol=report_protocol)


def _public(board: pd.DataFrame) -> pd.DataFrame:
    return board[[c for c in board.columns if not c.startswith("_")]]


def output_stem(metrics: list[str], group_by: list[str] | None, where: dict | None, include_failed: bool,
                ci: float, ci_method: str = "t", n_boot: int = 2000, boot_seed: int = 0) -> str:
    """Readable prefix (the metric names) + a hash of everything that changes the table (the bootstrap settings
    only with ``ci_method=bootstrap``, so a Student-t table keeps its name)."""
    spec = {"metrics": metrics, "group_by": group_by, "where": _flat_filters(where),
            "include_failed": include_failed, "ci": ci}
    if ci_method != "t":
        spec.update(ci_method=ci_method, n_boot=int(n_boot), boot_seed=int(boot_seed))
    spec = json.dumps(spec, sort_keys=True, default=str)
    safe = "+".join(m.replace("@", "_at_").replace("/", "_").replace("+", "_plus_") for m in metrics)[:100]
    return f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def metrics_message(store_dir: str | Path, missing: list[str] | None = None,
                    available: list[str] | None = None) -> str:
    """What to say when ``metric`` is not given (``missing`` None) or names metrics the store lacks: the store's
    metric names, feature metrics and downstream scores (``<metric>@<trained on>``) apart."""
    from medsynbench.benchmark.store_index import available_metrics

    store = Path(store_dir)
    if available is None:
        has_records = (store / "records").is_dir() and any((store / "records").glob("*.json"))
        available = available_metrics(store) if has_records else []
    head = ("no metric given: set metric=<name> or metric=[<name>,<name>,...]" if missing is None else
            f"no records of metric(s) {', '.join(missing)} in the results store")
    if not available:
        return f"{head}; the results store {store} has no metric records (train and evaluate runs first)"
    feature = [m for m in available if "@" not in m]
    downstream = [m for m in available if "@" in m]
    lines = [f"{head}. Metrics in the results store {store}:"]
    if feature:
        lines.append(f"  metrics: {', '.join(feature)}")
    if downstream:
        lines.append(f"  downstream scores (<metric>@<trained on>): {', '.join(downstream)}")
    return "\n".join(lines)


def _store_table(store_dir: str | Path, metrics: list[str]) -> pd.DataFrame:
    """The requested metrics' rows from the store's columnar index (refreshed from new and changed record files
    first; see benchmark/store_index.py): the leaderboard of ``metric_table(load_records(store_dir))``, faster."""
    from medsynbench.benchmark.store_index import available_metrics, metric_table_from_store

    table = metric_table_from_store(store_dir, metrics)
    found = set(table["metric"].dropna()) if "metric" in table else set()
    missing = [m for m in metrics if m not in found]
    if missing:  # the error names every metric of the store, as leaderboard() does on the whole table
        raise UnknownMetricError(missing, available_metrics(store_dir))
    return table


def write_leaderboard(store_dir: str | Path, out_dir: str | Path, metric: str | list[str],
                      group_by: list[str] | None = None, include_failed: bool = False, where: dict | None = None,
                      ci: float = 0.95, ci_method: str = "t", n_boot: int = 2000,
                      boot_seed: int = 0) -> tuple[pd.DataFrame, str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` (full precision), ``<stem>.tex`` (booktabs), ``<stem>.html`` (one
    self-contained page, sortable) and ``<stem>.json`` (grouping, pooled keys, filters, CI method, protocol,
    footnotes); returns (board, Markdown text, Markdown path)."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    group_by = None if group_by is None else list(group_by)
    CI(str(ci_method), int(n_boot), int(boot_seed))  # a wrong method fails before the store is read
    board = leaderboard(_store_table(store_dir, metrics), metrics, group_by, include_failed, where, ci,
                        ci_method, n_boot, boot_seed)
    text = to_markdown(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / output_stem(metrics, group_by, where, include_failed, ci, ci_method, n_boot, boot_seed)
    _public(board).to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".tex").write_text(to_latex(board))
    to_html(board, stem.with_suffix(".html"), name=stem.name)
    files = {kind: stem.with_suffix(ext).name for kind, ext in
             (("markdown", ".md"), ("csv", ".csv"), ("latex", ".tex"), ("html", ".html"))}
    stem.with_suffix(".json").write_text(json.dumps({**board.attrs, "files": files}, indent=2, default=str))
    return board, text, stem.with_suffix(".md")

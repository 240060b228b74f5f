"""``medsynbench report``: the four studies' tables and figures from the results store (reads the store only).

``build_report(store_dir, out_dir, where)`` selects records with the leaderboard's filter semantics (any config key
or run column, e.g. ``{"experiment_name": "x", "dataset": {"name": "kvasir"}}``; completed runs unless
``include_failed``), builds the sections (report_tables.py, report_figures.py) and writes

- ``<out>/tables/<name>.md`` / ``.csv`` (full precision) / ``.tex`` (pandas ``Styler.to_latex``, booktabs rules),
- ``<out>/figures/<name>.png`` / ``.svg``,
- ``<out>/report.md``: every section with its tables, figures, protocol and notes,
- ``<out>/report.html`` through ``benchmark.report_html.render_html`` where that module exists.

A section whose ingredients are missing carries notes saying what is missing and how to get it; it never gets an
empty or made-up table.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsynbench.benchmark.leaderboard import _apply_filters, _flat_filters, fmt
from medsynbench.benchmark.report_types import ReportSection, ReportTable
from medsynbench.benchmark.store import load_records, metric_table
from medsynbench.benchmark.validate import ConfigError

log = logging.getLogger(__name__)


def _sections() -> dict[str, Callable]:
    from medsynbench.benchmark import report_figures as F
    from medsynbench.benchmark import report_tables as T

    return {
        "empirical_table2": lambda ctx, figs: T.empirical_table2(ctx),
        "delentropy_fd_vs_size": F.delentropy_fd_vs_size,
        "dermatology_table1": lambda ctx, figs: T.dermatology_table1(ctx),
        "dermatology_table2": lambda ctx, figs: T.dermatology_table2(ctx),
        "medigan_tables": lambda ctx, figs: T.medigan_tables(ctx)[0],
        "sensitivity": F.sensitivity,
        "size_curves": F.size_curves,
        "delentropy_violins": F.delentropy_violins,
        "metric_vs_downstream": F.metric_vs_downstream,
        "fd_rr_vs_fd_rs": F.fd_rr_vs_fd_rs,
        "sample_grids": F.sample_grids,
        "training_curves": F.training_curves,
        "federated_curves": _federated_curves,  # opt-in (not in SECTIONS): sections=[federated_curves]
    }


def _federated_curves(ctx, out_dir):
    from medsynbench.benchmark.federated.curves import report_section

    return report_section(ctx, out_dir)


SECTIONS = ("empirical_table2", "delentropy_fd_vs_size", "dermatology_table1", "dermatology_table2",
            "medigan_tables", "sensitivity", "size_curves", "delentropy_violins", "metric_vs_downstream",
            "fd_rr_vs_fd_rs", "sample_grids", "training_curves")


def select_records(store_dir: str | Path, where: dict | None = None, include_failed: bool = False,
                   record_ids: set[str] | None = None):
    """(metric_table rows, records by id) of the store's records that pass the filters."""
    records = load_records(store_dir)
    if not records:
        raise ConfigError(f"the results store {store_dir} holds no records ({Path(store_dir) / 'records'} is empty "
                         f"or absent)")
    if record_ids is not None:
        records = [r for r in records if r.get("record_id") in record_ids]
    table = metric_table(records)
    filters = _flat_filters(where)
    try:
        rows = _apply_filters(table, filters, include_failed)
    except KeyError as err:  # a filter key that no record has: the message lists the known keys
        raise ConfigError(str(err.args[0]) if err.args else str(err)) from None
    rows = rows[rows["metric"].notna()]
    if rows.empty:
        raise ConfigError(f"no {'records' if include_failed else 'completed records'} with metrics in {store_dir} "
                         f"match the filters {filters or '{}'}")
    keep = set(rows["record_id"])
    return rows.reset_index(drop=True), {r["record_id"]: r for r in records if r["record_id"] in keep}


def sweep_record_ids(sweep_dir: str | Path, results_dir: str | Path = "results") -> set[str]:
    """Record ids (training id--evaluation id) of a Hydra multirun's jobs (benchmark.status re-plans the sweep);
    ``latest`` = the newest multirun under ``results_dir``."""
    from medsynbench.benchmark.status import find_latest_sweep, sweep_status

    if str(sweep_dir) == "latest":
        sweep_dir = find_latest_sweep(results_dir)
    report = sweep_status(sweep_dir)
    return {f"{r['training_id']}--{r['evaluation_id']}" for r in report["runs"] if r.get("training_id")}


# --- writing -------------------------------------------------------------------------------------------------------

def _cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return fmt(float(v))
    return str(v)


def table_markdown(table: ReportTable) -> str:
    shown = table.frame.map(_cell) if hasattr(table.frame, "map") else table.frame.applymap(_cell)
    return shown.to_markdown(index=False)


_LATEX_SYMBOLS = {"↓": r"$\downarrow$", "↑": r"$\uparrow$", "±": r"$\pm$", "·": r"$\cdot$", "–": "--",
                  "ρ": r"$\rho$", "μ": r"$\mu$", "σ": r"$\sigma$"}


def table_latex(table: ReportTable) -> str:
    frame = table.frame
    styler = frame.style.hide(axis="index").format(
        lambda v: _cell(v), escape="latex").format_index(escape="latex", axis=1)
    caption = table.caption
    text = styler.to_latex(hrules=True, caption=caption.replace("%", r"\%").replace("_", r"\_").replace("#", r"\#"),
                           label=f"tab:{table.name}", position_float="centering")
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def write_table(table: ReportTable, tables_dir: Path) -> dict[str, Path]:
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: tables_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")}
    md = [f"**{table.name}**: {table.caption}", ""]
    if table.protocol:
        md.append("Protocol: " + " · ".join(f"{k} {v}" for k, v in table.protocol.items()))
        md.append("")
    md.append(table_markdown(table))
    md += [""] + [f"- {n}" for n in table.notes]
    paths["md"].write_text("\n".join(md).rstrip() + "\n")
    table.frame.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(table_latex(table))
    return paths


def report_markdown(title: str, sections: list[ReportSection], protocol: dict, out_dir: Path) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in protocol.items()] + [""]
    built = [s for s in sections if not s.empty]
    missing = [s for s in sections if s.empty]
    lines.append("## Contents")
    lines += [f"- [{s.title}](#{s.key})" for s in built]
    if missing:
        lines.append(f"- [Not built: missing ingredients](#not-built) ({len(missing)})")
    lines.append("")
    for s in built:
        lines += [f'<a id="{s.key}"></a>', f"## {s.title}", ""]
        if s.description:
            lines += [s.description, ""]
        for t in s.tables:
            lines += [f"### Table `{t.name}`", "", t.caption, ""]
            if t.protocol:
                lines += ["Protocol: " + " · ".join(f"{k} {v}" for k, v in t.protocol.items()), ""]
            lines += [table_markdown(t), ""]
            lines += [f"- {n}" for n in t.notes]
            lines += [f"Files: [md](tables/{t.name}.md) · [csv](tables/{t.name}.csv) · [tex](tables/{t.name}.tex)",
                      ""]
        for f in s.figures:
            rel = Path(f.png).relative_to(out_dir) if Path(f.png).is_relative_to(out_dir) else f.png
            lines += [f"### Figure `{f.name}`", "", f"![{f.name}]({rel})", "", f.caption, ""]
            if f.protocol:
                lines += ["Protocol: " + " · ".join(f"{k} {v}" for k, v in f.protocol.items()), ""]
        if s.notes:
            lines += ["Notes:", *[f"- {n}" for n in s.notes], ""]
    if missing:
        lines += ['<a id="not-built"></a>', "## Not built: missing ingredients", ""]
        for s in missing:
            lines.append(f"- **{s.title}** (`{s.key}`): " + ("; ".join(s.notes) or "no data"))
    return "\n".join(lines).rstrip() + "\n"


# --- entry point ---------------------------------------------------------------------------------------------------

def build_report(store_dir: str | Path, out_dir: str | Path, where: dict | None = None, *,
                 sections: list[str] | None = None, include_failed: bool = False, fd_metric: str | None = None,
                 downstream_metric: str | None = None, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                 runs_dir: str | Path | None = None, sweep_dir: str | Path | None = None,
                 results_dir: str | Path = "results",
                 title: str = "medsynbench report", progress: Callable[[str], None] | None = None
                 ) -> list[ReportSection]:
    """Build the report's sections from the results store and write tables, figures, report.md (and report.html
    where ``benchmark.report_html`` exists) to ``out_dir``. Returns every requested section (sections whose
    ingredients are missing have notes and no table or figure)."""
    from medsynbench.benchmark.report_tables import ReportContext

    registry = _sections()
    wanted = list(SECTIONS if sections is None else sections)
    unknown = [s for s in wanted if s not in registry]
    if unknown:
        raise ConfigError(f"report sections {unknown} unknown; valid sections: {', '.join(registry)}")
    out_dir = Path(out_dir)
    ids = sweep_record_ids(sweep_dir, results_dir) if sweep_dir else None
    rows, records = select_records(store_dir, where, include_failed, ids)
    ctx = ReportContext(rows, records, ci=ci, fd_metric=fd_metric, downstream_metric=downstream_metric,
                        n_boot=n_boot, seed=seed, runs_dir=Path(runs_dir) if runs_dir else None)
    say = progress or (lambda msg: log.info("%s", msg))
    built: list[ReportSection] = []
    for key in wanted:
        t0 = time.perf_counter()
        section = registry[key](ctx, out_dir / "figures")
        for table in section.tables:
            write_table(table, out_dir / "tables")
        built.append(section)
        state = (f"built ({len(section.tables)} table(s), {len(section.figures)} figure(s))" if not section.empty
                 else "note: " + ("; ".join(section.notes) or "no data"))
        say(f"{key}: {state} [{time.perf_counter() - t0:.1f} s]")
    protocol = {"store": str(store_dir), "filters": json.dumps(_flat_filters(where), default=str) or "{}",
                "records": str(len(records)), "datasets": ", ".join(ctx.datasets()), "GANs": ", ".join(ctx.gans()),
                "FD metric": str(ctx.fd_metric), "confidence level": f"{ci:g}"}
    if sweep_dir:
        protocol["sweep"] = str(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(report_markdown(title, built, protocol, out_dir))
    try:
        from medsynbench.benchmark.report_html import render_html
    except ModuleNotFoundError as err:
        if err.name != "medsynbench.benchmark.report_html":
            raise
        say("report.html: not written (benchmark/report_html.py is not installed)")
    else:
        render_html(title, built, out_dir / "report.html", protocol=protocol)
    return built

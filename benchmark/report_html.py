"""One self-contained HTML page from a list of :class:`ReportSection` (offline: nothing is fetched).

- Figures are embedded (PNG as a base64 ``data:`` URI; the SVG, when there is one, as a download link of the same
  kind); a figure whose PNG is missing becomes a visible warning, never a broken image.
- Tables sort by clicking a header (small inline vanilla script; numeric-aware: a cell's full-precision value is in
  ``data-v``, text cells such as ``197.1 ± 1.3 †`` or ``[1.5, 6.1]`` sort by their leading number, missing values
  ``–`` always last). Each table can be downloaded as CSV (full precision) from the page.
- The protocol of every number is visible: the report-wide protocol in the header block, each table's and figure's
  protocol under its caption and as a ``title=`` tooltip on the table's headers and cells.
- Section notes (a missing ingredient, e.g. "no downstream records") are callouts; notes and cells carrying a
  warning mark (``† ‡ § ¶ ✗ ‖``) or the word "warning" are highlighted.
- A Content-Security-Policy forbids every external load (``default-src 'none'``), so a page that works here works
  offline; ``tests/test_report_browser.py`` opens it in headless Chromium and checks there are no console errors.
"""
from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from medsynbench.benchmark.leaderboard import fmt  # one number format for leaderboards and reports
from medsynbench.benchmark.report_types import ReportFigure, ReportSection, ReportTable
from medsynbench.io import atomic_write_bytes

# Characters that mark a number carrying a warning (leaderboard: small-sample warning, collapsed seeds, mixed
# protocols); a cell or note containing one is highlighted.
WARNING_MARKS = "†‡§¶✗‖"
_WARN_RE = re.compile(f"[{WARNING_MARKS}]|\\bwarn", re.IGNORECASE)


_NUMERIC_TEXT = re.compile(r"^\[?\s*[-+\u2212]?(\d|\.\d)")


def protocol_text(protocol: dict | None) -> str:
    """``{"extractor": "unet_encoder", "n_real": [80]}`` -> ``extractor: unet_encoder · n_real: 80``."""
    return " · ".join(f"{k}: {_value_text(v)}" for k, v in (protocol or {}).items())


def _value_text(v) -> str:
    if isinstance(v, (list, tuple, set)):
        return " | ".join(str(x) for x in v)
    return str(v)


def _is_warning(text: str) -> bool:
    return bool(_WARN_RE.search(text))


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "item"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def _flat_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A named or non-default index becomes leading columns; MultiIndex columns are joined with `` · ``."""
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" · ".join(str(p) for p in col if str(p) not in ("", "nan")) for col in frame.columns]
    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
            and all(n is None for n in frame.index.names)):
        names = [n if n is not None else ("" if frame.index.nlevels == 1 else f"level {i}")
                 for i, n in enumerate(frame.index.names)]
        frame.index = frame.index.set_names(names)
        frame = frame.reset_index()
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _cell(v) -> dict:
    """Display text, sort value (``data-v``: full precision, empty for missing) and CSS classes of one cell."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return {"text": "–", "v": "", "cls": "na"}
    if isinstance(v, (bool, np.bool_)):
        return {"text": "yes" if v else "no", "v": None, "cls": ""}
    if isinstance(v, (int, np.integer)):
        return {"text": str(int(v)), "v": str(int(v)), "cls": "num"}
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return {"text": str(v), "v": "", "cls": "na"}
        return {"text": fmt(float(v)), "v": repr(float(v)), "cls": "num"}
    text = str(v)
    if text.strip() in ("", "–", "-"):  # shown as not measured / not applicable
        return {"text": text.strip() or "–", "v": "", "cls": "na"}
    return {"text": text, "v": None, "cls": "marked" if _is_warning(text) and len(text) < 200 else ""}


def _table_view(table: ReportTable, used: set[str]) -> dict:
    frame = _flat_frame(table.frame)
    proto = protocol_text(table.protocol)
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    # a column whose cells are all numbers, numeric text ("0.18 ± 0.03 †", "[1.5, 6.1]") or missing is right-aligned
    numeric = [bool(rows) and all(r[j]["cls"] in ("num", "na") or _NUMERIC_TEXT.match(r[j]["text"]) for r in rows)
               for j in range(frame.shape[1])]
    for r in rows:
        for j, c in enumerate(r):
            if numeric[j] and "num" not in c["cls"]:
                c["cls"] = (c["cls"] + " num").strip()
    csv = frame.to_csv(index=False).encode("utf-8")
    return {"id": "tbl-" + _slug(table.name, used), "name": table.name, "caption": table.caption,
            "protocol": table.protocol, "protocol_text": proto, "columns": list(frame.columns), "numeric": numeric,
            "rows": rows, "notes": [{"text": n, "warn": _is_warning(n)} for n in table.notes],
            "csv": "data:text/csv;charset=utf-8;base64," + base64.b64encode(csv).decode("ascii"),
            "n_rows": len(rows)}


def _figure_view(figure: ReportFigure, used: set[str]) -> dict:
    view = {"id": "fig-" + _slug(figure.name, used), "name": figure.name, "caption": figure.caption,
            "protocol": figure.protocol, "protocol_text": protocol_text(figure.protocol), "src": None,
            "width": None, "height": None, "svg": None, "missing": None}
    png = Path(figure.png) if figure.png else None
    if png is None or not png.is_file():
        view["missing"] = f"figure file missing: {png}"
        return view
    data = png.read_bytes()
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            view["width"], view["height"] = im.size
            fmt = (im.format or "PNG").lower()
    except Exception as err:  # noqa: BLE001 - an unreadable file is reported on the page, not embedded broken
        view["missing"] = f"figure file unreadable: {png} ({type(err).__name__}: {err})"
        return view
    view["src"] = f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii")
    svg = Path(figure.svg) if figure.svg else None
    if svg is not None and svg.is_file():
        view["svg"] = "data:image/svg+xml;base64," + base64.b64encode(svg.read_bytes()).decode("ascii")
    return view


def _section_view(section: ReportSection, used: set[str]) -> dict:
    notes = [{"text": n, "warn": _is_warning(n)} for n in section.notes]
    return {"id": "sec-" + _slug(section.key, used), "title": section.title, "description": section.description,
            "notes": notes, "tables": [_table_view(t, used) for t in section.tables],
            "figures": [_figure_view(f, used) for f in section.figures], "empty": section.empty}


_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee8; --bg:#ffffff; --panel:#f5f7fb; --accent:#2156a5;
        --warn-bg:#fff6e0; --warn-line:#e0a100; --note-bg:#eef4ff; --note-line:#2156a5; --mark:#fff0c2; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
.page { max-width: 1400px; margin: 0 auto; padding: 28px 32px 64px; }
header.top { border-bottom: 3px solid var(--accent); padding-bottom: 14px; margin-bottom: 20px; }
h1 { font-size: 1.75rem; margin: 0 0 4px; }
h2 { font-size: 1.3rem; margin: 0 0 10px; }
h3 { font-size: 1.02rem; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0; }
.protocol-block { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px;
                  margin: 14px 0 0; }
.protocol-block h2 { font-size: 1rem; margin: 0 0 6px; }
dl.proto { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: .86rem; }
dl.proto dt { color: var(--muted); font-weight: 600; }
dl.proto dd { margin: 0; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
              overflow-wrap: anywhere; }
nav.toc { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px;
          margin: 0 0 26px; }
nav.toc h2 { font-size: 1rem; margin: 0 0 4px; }
nav.toc ol { margin: 0; padding-left: 22px; columns: 2; column-gap: 32px; }
nav.toc li { break-inside: avoid; padding: 1px 0; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.badge { display: inline-block; font-size: .72rem; padding: 0 6px; border-radius: 9px; margin-left: 6px;
         background: var(--warn-bg); border: 1px solid var(--warn-line); color: #7a5500; vertical-align: 1px; }
section.rsec { margin: 0 0 36px; padding-top: 6px; border-top: 1px solid var(--line); }
section.rsec > h2 { margin-top: 14px; }
.desc { color: var(--muted); margin: 0 0 12px; }
.callout { border-left: 4px solid var(--note-line); background: var(--note-bg); padding: 8px 12px; margin: 10px 0;
           border-radius: 0 6px 6px 0; }
.callout.warn { border-left-color: var(--warn-line); background: var(--warn-bg); }
.callout .label { font-weight: 700; margin-right: 6px; }
figure { margin: 16px 0 24px; }
figcaption { margin: 0 0 8px; }
figcaption .cap { font-weight: 600; }
dl.proto.inline { display: flex; flex-wrap: wrap; gap: 2px 18px; margin-top: 3px; }
dl.proto.inline > div { display: flex; gap: 6px; }
dl.proto.inline dt { font-weight: 600; }
.scroll { display: inline-block; max-width: 100%; overflow-x: auto; border: 1px solid var(--line);
          border-radius: 8px; vertical-align: top; }
table.sortable { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
table.sortable th, table.sortable td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left;
                                       white-space: nowrap; }
table.sortable td.num, table.sortable th.num { text-align: right; }
table.sortable thead th { position: sticky; top: 0; background: #e9eef7; z-index: 1; padding: 0;
                          white-space: normal; max-width: 15em; vertical-align: bottom; }
table.sortable thead th button { all: unset; display: block; width: 100%; padding: 6px 10px; cursor: pointer;
                                 font-weight: 650; box-sizing: border-box; }
table.sortable thead th button:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
table.sortable thead th button::after { content: "⇅"; margin-left: 5px; color: #9aa3b5; font-weight: 400;
                                        font-size: .8em; }
table.sortable thead th[aria-sort="ascending"] button::after { content: "▲"; color: var(--accent); }
table.sortable thead th[aria-sort="descending"] button::after { content: "▼"; color: var(--accent); }
table.sortable tbody tr:nth-child(even) { background: #fafbfd; }
table.sortable tbody tr:hover { background: #eef3fb; }
td.na { color: #9aa3b5; }
td.marked { background: var(--mark); }
ol.notes { margin: 8px 0 0; padding-left: 20px; font-size: .85rem; color: var(--muted); }
ol.notes li.warn { color: #7a5500; }
.downloads { font-size: .8rem; margin-top: 6px; }
.downloads a { margin-right: 12px; }
figure.fig img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
footer { color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); padding-top: 10px; }
@media print { nav.toc { display: none; } table.sortable thead th { position: static; } }
"""

# Numeric-aware sorting: data-v (full precision) first, else a leading number of the text ("197.1 ± 1.3 †",
# "[1.5, 6.1]"); cells without a number compare as text; missing values ("", "–", "-") stay last both ways.
_JS = r"""
(function () {
  "use strict";
  var NUM = /^\s*\[?\s*([-+\u2212]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)/i;
  function sortKey(td) {
    var v = td.getAttribute("data-v");
    if (v !== null) { return v === "" ? null : { n: parseFloat(v) }; }
    var t = td.textContent.trim();
    if (t === "" || t === "\u2013" || t === "-") { return null; }
    var m = NUM.exec(t);
    if (m) { return { n: parseFloat(m[1].replace("\u2212", "-")) }; }
    return { s: t };
  }
  function compare(a, b) {
    if (a.n !== undefined && b.n !== undefined) { return a.n - b.n; }
    if (a.n !== undefined) { return -1; }
    if (b.n !== undefined) { return 1; }
    return a.s.localeCompare(b.s, undefined, { numeric: true, sensitivity: "base" });
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
      return { tr: tr, i: i, k: sortKey(tr.cells[col]) };
    });
    rows.sort(function (x, y) {
      if (x.k === null || y.k === null) {
        return (x.k === null) - (y.k === null) || x.i - y.i;
      }
      return (asc ? compare(x.k, y.k) : compare(y.k, x.k)) || x.i - y.i;
    });
    rows.forEach(function (r) { body.appendChild(r.tr); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortTable(table, col, th); }); }
    });
  });
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<div class="page">
<header class="top">
  <h1>{{ title }}</h1>
  <p class="sub">{{ n_tables }} table(s), {{ n_figures }} figure(s) in {{ sections|length }} section(s) · medsynbench</p>
  {%- if protocol %}
  <div class="protocol-block" id="protocol">
    <h2>Protocol</h2>
    <dl class="proto">{% for k, v in protocol %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
  </div>
  {%- endif %}
</header>
{%- if sections %}
<nav class="toc" aria-label="Contents">
  <h2>Contents</h2>
  <ol>{% for s in sections %}
    <li><a href="#{{ s.id }}">{{ s.title }}</a>{% if s.notes %}<span class="badge" title="{{ s.notes|map(attribute='text')|join(' / ') }}">{{ s.notes|length }} note{{ 's' if s.notes|length > 1 }}</span>{% endif %}</li>{% endfor %}
  </ol>
</nav>
{%- endif %}
<main>
{%- for s in sections %}
<section class="rsec" id="{{ s.id }}">
  <h2>{{ s.title }}</h2>
  {%- if s.description %}<p class="desc">{{ s.description }}</p>{% endif %}
  {%- for n in s.notes %}
  <div class="callout{{ ' warn' if n.warn or s.empty }}" role="note"><span class="label">{{ '⚠ Warning' if n.warn else 'Note' }}</span>{{ n.text }}</div>
  {%- endfor %}
  {%- if s.empty and not s.notes %}
  <div class="callout warn" role="note"><span class="label">Note</span>nothing to show in this section.</div>
  {%- endif %}
  {%- for t in s.tables %}
  <figure class="tbl" id="{{ t.id }}">
    <figcaption><span class="cap">{{ t.caption }}</span>
      {%- if t.protocol %}<dl class="proto inline">{% for k, v in t.protocol_items %}<div><dt>{{ k }}</dt><dd>{{ v }}</dd></div>{% endfor %}</dl>{% endif %}
    </figcaption>
    <div class="scroll">
    <table class="sortable" data-name="{{ t.name }}">
      <thead><tr>{% for c in t.columns %}<th scope="col" aria-sort="none"{% if t.numeric[loop.index0] %} class="num"{% endif %} title="{{ c }}{% if t.protocol_text %} — {{ t.protocol_text }}{% endif %} (click to sort)"><button type="button">{{ c }}</button></th>{% endfor %}</tr></thead>
      <tbody{% if t.protocol_text %} title="{{ t.protocol_text }}"{% endif %}>
      {%- for row in t.rows %}
        <tr>{% for c in row %}<td{% if c.cls %} class="{{ c.cls }}"{% endif %}{% if c.v is not none %} data-v="{{ c.v }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
      {%- endfor %}
      </tbody>
    </table>
    </div>
    {%- if t.notes %}
    <ol class="notes">{% for n in t.notes %}<li{% if n.warn %} class="warn"{% endif %}>{{ n.text }}</li>{% endfor %}</ol>
    {%- endif %}
    <div class="downloads">{{ t.n_rows }} row(s) · <a download="{{ t.name }}.csv" href="{{ t.csv }}">CSV (full precision)</a></div>
  </figure>
  {%- endfor %}
  {%- for f in s.figures %}
  <figure class="fig" id="{{ f.id }}">
    <figcaption><span class="cap">{{ f.caption }}</span>
      {%- if f.protocol %}<dl class="proto inline">{% for k, v in f.protocol_items %}<div><dt>{{ k }}</dt><dd>{{ v }}</dd></div>{% endfor %}</dl>{% endif %}
    </figcaption>
    {%- if f.missing %}
    <div class="callout warn" role="note"><span class="label">⚠ Warning</span>{{ f.missing }}</div>
    {%- else %}
    <img src="{{ f.src }}" alt="{{ f.caption }}" width="{{ f.width }}" height="{{ f.height }}"{% if f.protocol_text %} title="{{ f.protocol_text }}"{% endif %}>
    <div class="downloads">{% if f.svg %}<a download="{{ f.name }}.svg" href="{{ f.svg }}">SVG</a>{% endif %}<a download="{{ f.name }}.png" href="{{ f.src }}">PNG</a></div>
    {%- endif %}
  </figure>
  {%- endfor %}
</section>
{%- endfor %}
</main>
<footer>Written by medsynbench from the results store. Hover a table's header or cell for the protocol of its numbers;
click a header to sort.</footer>
</div>
<script>{{ js }}</script>
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_html_text(title: str, sections: list[ReportSection], protocol: dict | None = None) -> str:
    """The page as text (see :func:`render_html`)."""
    used: set[str] = set()
    views = [_section_view(s, used) for s in sections]
    for v in views:
        for item in v["tables"] + v["figures"]:
            item["protocol_items"] = [(k, _value_text(x)) for k, x in (item["protocol"] or {}).items()]
    template = _ENV.from_string(_TEMPLATE)
    return template.render(
        title=title, sections=views, css=markupsafe.Markup(_CSS), js=markupsafe.Markup(_JS),
        protocol=[(k, _value_text(v)) for k, v in (protocol or {}).items()],
        n_tables=sum(len(v["tables"]) for v in views), n_figures=sum(len(v["figures"]) for v in views))


def render_html(title: str, sections: list[ReportSection], out_path: Path, protocol: dict | None = None) -> Path:
    """Write one self-contained HTML page (figures embedded, sortable tables, protocol in the header and tooltips,
    section notes as callouts, table of contents) to ``out_path`` atomically; returns the path."""
    out_path = Path(out_path)
    atomic_write_bytes(out_path, render_html_text(title, sections, protocol).encode("utf-8"))
    out_path.chmod(0o644)  # a page to share (the temporary file behind the atomic write is private)
    return out_path


__all__ = ["WARNING_MARKS", "protocol_text", "render_html", "render_html_text"]

"""The contents of a report, independent of how it is written (Markdown/CSV/LaTeX files, the HTML page).

``benchmark/report.py`` builds a list of :class:`ReportSection` from the results store;
``benchmark/report_html.py`` renders them into one self-contained HTML page. Every table and figure carries the
protocol of its numbers (extractor, weights hash, preprocessing, sample counts, seeds), and a section whose
ingredients are missing carries a note instead of an empty or made-up table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class ReportTable:
    name: str                      # file stem: <out>/tables/<name>.{md,csv,tex}
    frame: pd.DataFrame            # the values as displayed (numbers stay numbers; NaN = not measured)
    caption: str
    protocol: dict[str, str] = field(default_factory=dict)  # e.g. {"extractor": "unet_encoder", "weights sha256": ..}
    notes: list[str] = field(default_factory=list)          # footnotes (warnings, marks explained)


@dataclass
class ReportFigure:
    name: str                      # file stem: <out>/figures/<name>.{png,svg}
    png: Path
    svg: Path | None
    caption: str
    protocol: dict[str, str] = field(default_factory=dict)


@dataclass
class ReportSection:
    key: str                       # stable id, e.g. "empirical_table2"
    title: str                     # e.g. "Empirical study, Table 2: best-of-sweep FID and Dice"
    description: str = ""
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "no downstream records: table not built" (missing inputs)

    @property
    def empty(self) -> bool:
        return not self.tables and not self.figures

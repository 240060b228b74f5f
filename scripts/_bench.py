"""Shared by the benchmark scripts: the machine's load next to every figure, and the Markdown + JSON outputs."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path


def uptime() -> str:
    """``uptime`` (load average) at the moment of a measurement: figures from a loaded machine say so."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def write_outputs(out: str | Path, data: dict, markdown: str) -> Path:
    """``<out>.json`` (the numbers) and ``<out>.md`` (the table) side by side; returns the Markdown path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown)
    print(f"wrote {out.with_suffix('.md')}")
    return out.with_suffix(".md")

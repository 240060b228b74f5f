"""The throughput benchmark runs end to end at a tiny size and writes its report (the real numbers come from a
full run: scripts/bench_train_throughput.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train_throughput.py"


def test_benchmark_writes_markdown_and_json(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--image-size", "32", "--channels", "1", "--batch-size", "4", "--steps", "2",
                             "--rounds", "2", "--warmup", "1", "--threads", "1", "--out", str(tmp_path / "tp")])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "tp.json").read_text())
    assert saved["ratio"] == result["ratio"] > 0
    assert len(saved["framework_rounds"]) == len(saved["plain_rounds"]) == 2
    assert saved["ratio"] == saved["framework_img_per_s"] / saved["plain_img_per_s"]
    assert len(saved["full_loop_rounds"]) == 2 and saved["full_loop_ratio"] > 0
    assert "ratio framework step / plain" in (tmp_path / "tp.md").read_text()

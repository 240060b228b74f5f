"""Load: 20 simulated raters x 100 answers each, concurrently, against the real uvicorn server on loopback. No
answer may be lost (the database holds each rater's last answer for every image), and the server keeps answering
other requests meanwhile. Bounded in time (the whole load < 120 s on a shared 2-core CPU) and count. Throughput and
latency are measured by scripts/bench_turing_load.py (results/benchmarks/turing_load.json), not here."""
from __future__ import annotations

from medsynbench.benchmark.turing.create import create_study
from medsynbench.benchmark.turing.load import simulate_raters, stored_answers
from medsynbench.benchmark.turing.server import running
from tests.test_turing_security import make_folders, turing_cfg

N_RATERS, N_IMAGES = 20, 100


def test_20_concurrent_raters_lose_no_answer(tmp_path):
    real, syn = make_folders(tmp_path, 50, 50)
    summary = create_study(turing_cfg(tmp_path, f"study_dir={tmp_path / 's'}", f"real_folder={real}",
                                      f"synthetic_folder={syn}", f"n_images={N_IMAGES}", "image_size=16",
                                      f"raters=[{','.join(f'r{i:02d}' for i in range(N_RATERS))}]"))
    with running(summary["study_dir"]) as url:
        result = simulate_raters(url, summary["rater_tokens"], limit_s=120)
    assert not result["unfinished"], "the load did not finish within 120 s"
    assert not result["errors"], result["errors"][:5]
    assert len(result["latencies"]) == N_RATERS * N_IMAGES
    stored = stored_answers(summary["study_dir"])
    expected = {(name, image): v for name, answers in result["sent"].items() for image, v in answers.items()}
    assert len(stored) == N_RATERS * N_IMAGES and stored == expected  # every answer, none lost or mixed up
    assert result["probe"] and max(result["probe"]) < 10.0  # the server stays responsive under load

"""Load: 20 simulated raters x 100 answers each, concurrently, against the real uvicorn server on loopback. No
answer may be lost (the database holds each rater's last answer for every image), and the server keeps answering
other requests meanwhile. Bounded in time (the whole load < 120 s on a shared 2-core CPU) and count."""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np

from medsynbench.benchmark.turing import db
from medsynbench.benchmark.turing.create import create_study
from medsynbench.benchmark.turing.server import running
from tests.test_turing_security import make_folders, turing_cfg

N_RATERS, N_IMAGES = 20, 100


def test_20_concurrent_raters_lose_no_answer(tmp_path):
    real, syn = make_folders(tmp_path, 50, 50)
    summary = create_study(turing_cfg(tmp_path, f"study_dir={tmp_path / 's'}", f"real_folder={real}",
                                      f"synthetic_folder={syn}", f"n_images={N_IMAGES}", "image_size=16",
                                      f"raters=[{','.join(f'r{i:02d}' for i in range(N_RATERS))}]"))
    sent: dict[str, dict[str, tuple[str, int]]] = {}
    errors: list[str] = []
    latencies: list[float] = []
    probe: list[float] = []
    start = threading.Barrier(N_RATERS + 1)
    with running(summary["study_dir"]) as url:
        def rater(name: str, token: str, seed: int) -> None:
            rng = np.random.default_rng(seed)
            mine = sent.setdefault(name, {})
            with httpx.Client(base_url=url, timeout=30) as h:
                items = h.get(f"/r/{token}/state").json()["items"]
                start.wait()
                for it in items:
                    answer, conf = ("real", "synthetic")[rng.integers(2)], int(rng.integers(1, 6))
                    t0 = time.perf_counter()
                    r = h.post(f"/r/{token}/answer", json={"image_id": it["id"], "answer": answer,
                                                           "confidence": conf})
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text}")
                    mine[it["id"]] = (answer, conf)

        threads = [threading.Thread(target=rater, args=(n, t, i)) for i, (n, t) in
                   enumerate(summary["rater_tokens"].items())]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        with httpx.Client(base_url=url, timeout=30) as h:  # the server stays responsive under load
            token = summary["rater_tokens"]["r00"]
            while any(t.is_alive() for t in threads) and time.perf_counter() - t0 < 120:
                s = time.perf_counter()
                assert h.get(f"/r/{token}/state").status_code == 200
                probe.append(time.perf_counter() - s)
                time.sleep(0.2)
        for t in threads:
            t.join(timeout=max(1.0, 120 - (time.perf_counter() - t0)))
        elapsed = time.perf_counter() - t0
    assert not any(t.is_alive() for t in threads), "the load did not finish within 120 s"
    assert not errors, errors[:5]
    assert len(latencies) == N_RATERS * N_IMAGES
    conn = db.connect(summary["study_dir"])
    stored = {(r["name"], r["image_id"]): (r["answer"], r["confidence"]) for r in conn.execute(
        "SELECT r.name, a.image_id, a.answer, a.confidence FROM answers a JOIN raters r ON r.id = a.rater_id")}
    conn.close()
    expected = {(name, image): v for name, answers in sent.items() for image, v in answers.items()}
    assert len(stored) == N_RATERS * N_IMAGES and stored == expected  # every answer, none lost or mixed up
    assert probe and max(probe) < 10.0
    print(f"\n{N_RATERS * N_IMAGES} answers in {elapsed:.1f} s ({N_RATERS * N_IMAGES / elapsed:.0f}/s); latency "
          f"median {np.median(latencies) * 1e3:.0f} ms, p99 {np.percentile(latencies, 99) * 1e3:.0f} ms; "
          f"state probe max {max(probe) * 1e3:.0f} ms")

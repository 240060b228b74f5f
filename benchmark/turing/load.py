"""Simulated raters against a running study server: each rater answers every image of its order once, all raters at
the same time, while a probe keeps asking for one rater's state (is the server still responsive?). Used by the load
test (tests/test_turing_load.py) and the load benchmark (scripts/bench_turing_load.py). Needs ``httpx`` (the ``dev``
extra)."""
from __future__ import annotations

import threading
import time

import numpy as np


def simulate_raters(url: str, rater_tokens: dict[str, str], limit_s: float = 120.0, seed: int = 0) -> dict:
    """Run one thread per rater (random answer and confidence, seeded per rater) and a responsiveness probe every
    0.2 s until all raters are done or ``limit_s`` passes. Returns what was sent (``sent[name][image_id] = (answer,
    confidence)``), non-200 answers (``errors``), per-answer ``latencies`` and ``probe`` times (s), ``elapsed`` (s)
    and whether any rater thread was still running at the end (``unfinished``)."""
    import httpx

    sent: dict[str, dict[str, tuple[str, int]]] = {}
    errors: list[str] = []
    latencies: list[float] = []
    probe: list[float] = []
    start = threading.Barrier(len(rater_tokens) + 1)

    def rater(name: str, token: str, rater_seed: int) -> None:
        rng = np.random.default_rng(rater_seed)
        mine = sent.setdefault(name, {})
        with httpx.Client(base_url=url, timeout=30) as h:
            items = h.get(f"/r/{token}/state").json()["items"]
            start.wait()
            for it in items:
                answer, conf = ("real", "synthetic")[rng.integers(2)], int(rng.integers(1, 6))
                t0 = time.perf_counter()
                r = h.post(f"/r/{token}/answer", json={"image_id": it["id"], "answer": answer, "confidence": conf})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{name}: {r.status_code} {r.text}")
                mine[it["id"]] = (answer, conf)

    threads = [threading.Thread(target=rater, args=(n, t, seed + i)) for i, (n, t) in enumerate(rater_tokens.items())]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    token = next(iter(rater_tokens.values()))
    with httpx.Client(base_url=url, timeout=30) as h:
        while any(t.is_alive() for t in threads) and time.perf_counter() - t0 < limit_s:
            s = time.perf_counter()
            status = h.get(f"/r/{token}/state").status_code
            probe.append(time.perf_counter() - s)
            if status != 200:
                errors.append(f"probe: {status}")
            time.sleep(0.2)
    for t in threads:
        t.join(timeout=max(1.0, limit_s - (time.perf_counter() - t0)))
    return {"sent": sent, "errors": errors, "latencies": latencies, "probe": probe,
            "elapsed": time.perf_counter() - t0, "unfinished": any(t.is_alive() for t in threads)}


def stored_answers(study_dir) -> dict[tuple[str, str], tuple[str, int]]:
    """(rater name, image id) -> (answer, confidence) as the study database holds them."""
    from medsynbench.benchmark.turing import db

    conn = db.connect(study_dir)
    try:
        return {(r["name"], r["image_id"]): (r["answer"], r["confidence"]) for r in conn.execute(
            "SELECT r.name, a.image_id, a.answer, a.confidence FROM answers a JOIN raters r ON r.id = a.rater_id")}
    finally:
        conn.close()


def summary(result: dict) -> dict:
    """Throughput and latency figures of a :func:`simulate_raters` result."""
    lat = np.asarray(result["latencies"])
    n = len(lat)
    return {"answers": n, "seconds": result["elapsed"], "answers_per_s": n / result["elapsed"],
            "latency_median_ms": float(np.median(lat) * 1e3) if n else None,
            "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if n else None,
            "probe_max_ms": float(max(result["probe"]) * 1e3) if result["probe"] else None,
            "errors": len(result["errors"])}

"""Load benchmark of the visual Turing test server: N simulated raters answer every image of a study at the same
time against the real uvicorn server on loopback (benchmark/turing/load.py). Writes throughput, answer latency
(median, p99), the worst response time of a state request made during the load, and whether any answer was lost to
results/benchmarks/turing_load.json. Usage: python scripts/bench_turing_load.py [n_raters] [n_images]."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from medsynbench import config_dir
    from medsynbench.benchmark.config import register_configs
    from medsynbench.benchmark.turing.config import register_turing_config
    from medsynbench.benchmark.turing.create import create_study
    from medsynbench.benchmark.turing.load import simulate_raters, stored_answers, summary
    from medsynbench.benchmark.turing.server import running

    n_raters = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    n_images = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="msb_turing_bench_") as tmp:
        tmp = Path(tmp)
        for kind in ("real", "synthetic"):
            (tmp / kind).mkdir()
            for i in range(n_images // 2 + 1):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp / kind / f"{i}.png")
        register_configs()
        register_turing_config()
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            cfg = compose("turing", overrides=[
                "action=create", f"paths.results_dir={tmp / 'results'}", f"study_dir={tmp / 'study'}",
                f"real_folder={tmp / 'real'}", f"synthetic_folder={tmp / 'synthetic'}", f"n_images={n_images}",
                "image_size=32", f"raters=[{','.join(f'r{i:02d}' for i in range(n_raters))}]"])
        study = create_study(cfg)
        with running(study["study_dir"]) as url:
            result = simulate_raters(url, study["rater_tokens"], limit_s=600)
        sent = {(name, image): v for name, answers in result["sent"].items() for image, v in answers.items()}
        lost = len(set(sent.items()) - set(stored_answers(study["study_dir"]).items()))
    out = {"n_raters": n_raters, "n_images": n_images, "server": "uvicorn on 127.0.0.1, SQLite WAL",
           **summary(result), "answers_lost": lost, "unfinished": result["unfinished"]}
    path = REPO / "results" / "benchmarks" / "turing_load.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()

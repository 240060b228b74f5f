"""Peak memory while generating 10,000 samples from a model package: chunked (zoo.generate, batch 64) vs all at once
(one GAN.sample call holding every image). Python heap peak by tracemalloc (torch tensors' CPU storage is not
traced by tracemalloc, so the script also reports the tensors' bytes) and process RSS growth (psutil / resource).
Writes results/benchmarks/zoo_generate.json. Usage: python scripts/bench_zoo_generate.py [package_dir] [n]."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, resource, sys, time, tracemalloc, torch
torch.set_num_threads(1)
from medsynbench.benchmark.zoo import load_generator
from medsynbench.benchmark.zoo.generate import generate
pkg, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
gan, meta = load_generator(pkg, "cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start(); t0 = time.perf_counter()
if mode == "chunked_to_disk":
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        generate(pkg, num_samples=n, batch_size=64, seed=0, output_dir=d + "/gen")
else:
    out = gan.sample(n, seed=0, batch_size=n)
    del out
secs = time.perf_counter() - t0
_, peak = tracemalloc.get_traced_memory()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "n": n, "seconds": secs, "tracemalloc_peak_mib": peak / 2**20,
                  "rss_peak_growth_mib": (rss - base) / 1024, "rss_peak_mib": rss / 1024,
                  "image_bytes_per_sample": gan.data_channels * gan.image_size ** 2 * 4}))
'''


def main() -> None:
    pkg = sys.argv[1] if len(sys.argv) > 1 else None
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    scratch = tempfile.TemporaryDirectory(prefix="msb_zoo_bench_")
    if pkg is None:  # a tiny DCGAN package at 32 px (weights untrained: memory does not depend on them)
        from medsynbench.benchmark.zoo import write_package
        from medsynbench.gans.base import build_from_args

        gan = build_from_args({"_target_": "dcgan", "name": "dcgan", "image_size": 32, "image_channels": 3,
                               "num_mask_classes": 2, "g_filters": 16, "d_filters": 16})
        pkg = str(write_package(Path(scratch.name) / "zoo_bench_pkg", gan, {"id": "bench"},
                                overwrite=True))
    rows = []
    for mode in ("chunked_to_disk", "all_at_once"):
        out = subprocess.run([sys.executable, "-c", CHILD, pkg, str(n), mode], capture_output=True, text=True,
                             cwd=REPO, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    result = {"n": n, "package": pkg if len(sys.argv) > 1 else "tiny untrained DCGAN, 32 px, image + 2-class mask",
              "batch_size_chunked": 64, "runs": rows,
              "note": "RSS growth over the loaded model; all_at_once holds n images (n x image_bytes_per_sample) "
                      "at least twice (the output and the concatenated chunks)"}
    out = REPO / "results" / "benchmarks" / "zoo_generate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

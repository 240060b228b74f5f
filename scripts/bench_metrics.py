"""Benchmark the metrics suite against the peer libraries on the same features, one subprocess per measurement
(so peak memory is per task), and write results/benchmarks/metrics.md + .json.

    python scripts/bench_metrics.py            # N=10,000, d=2048 (heavy: run once, the machine is shared)
    python scripts/bench_metrics.py --quick    # N=1,000, d=256: checks the plumbing in seconds
    python scripts/bench_metrics.py --only eval_overhead   # just the evaluation-overhead section

Evaluation overhead ("the full evaluation of one run from cached real features costs no more than 1.2x the
synthetic feature extraction alone"): the `inception_fid` architecture with RANDOM-INIT weights made here (saved
to a local file; timings only, its numbers are not FID) on --eval-n synthetic --eval-size px grayscale images,
real features from the FeatureCache, metric list and options from conf/metrics/default.yaml.

Features: rng = np.random.default_rng(0); real ~ N(0, 1), fake ~ N(0.05, 1) (the reference recipe), float32.
Peak memory is the process's peak RSS (resource.getrusage) minus its RSS after loading the features.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _bench import uptime, write_outputs

REPO = Path(__file__).resolve().parents[1]
TASKS = {  # name: (metric, implementation)
    "fd_ours": ("FD", "medsynbench (Cholesky + eigvalsh, torch float64)"),
    "fd_scipy_sqrtm": ("FD", "pytorch-fid calculate_frechet_distance (scipy sqrtm)"),
    "fd_torch_fidelity": ("FD", "torch-fidelity fid_statistics_to_metric (eigvals)"),
    "kid_ours": ("KID 100x1000", "medsynbench (float32 products, float64 sums; auto route)"),
    "kid_ours_float64": ("KID 100x1000", "medsynbench (float64 throughout; auto route)"),
    "kid_torch_fidelity": ("KID 100x1000", "torch-fidelity kid_features_to_metric"),
    "prdc_ours": ("PR/DC k=3", "medsynbench (chunked torch, float64)"),
    "prdc_pkg": ("PR/DC k=3", "prdc.compute_prdc"),
}


def _features(n, d):
    rng = np.random.default_rng(0)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (0.05 + rng.standard_normal((n, d))).astype(np.float32)
    return real, fake


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_task(task, n, d):
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    real, fake = _features(n, d)
    from medsynbench.metrics.frechet import frechet_distance_from_stats, gaussian_stats
    stats = None
    if task.startswith("fd"):
        stats = (*gaussian_stats(real), *gaussian_stats(fake))
    # imports and LAPACK/BLAS first-call initialisation are not part of any timing
    torch.linalg.eigvalsh(torch.eye(4, dtype=torch.float64))
    np.linalg.eigvalsh(np.eye(4))
    peer = {"fd_scipy_sqrtm": "pytorch_fid.fid_score", "fd_torch_fidelity": "torch_fidelity.metric_fid",
            "kid_torch_fidelity": "torch_fidelity.metric_kid", "prdc_pkg": "prdc", "kid_ours": "medsynbench.metrics.kid",
            "kid_ours_float64": "medsynbench.metrics.kid",
            "prdc_ours": "medsynbench.metrics.prdc"}.get(task)
    if peer:
        __import__(peer)
    base = _rss_mb()
    t0 = time.perf_counter()
    if task == "fd_ours":
        value = frechet_distance_from_stats(*stats)
    elif task == "fd_scipy_sqrtm":
        import warnings
        from pytorch_fid.fid_score import calculate_frechet_distance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(calculate_frechet_distance(*stats))
    elif task == "fd_torch_fidelity":
        from torch_fidelity.metric_fid import fid_statistics_to_metric
        value = fid_statistics_to_metric({"mu": stats[0], "sigma": stats[1]}, {"mu": stats[2], "sigma": stats[3]},
                                         False)["frechet_inception_distance"]
    elif task == "kid_ours":
        from medsynbench.metrics.kid import kid_subset_values
        value = float(kid_subset_values(real, fake, 100, min(1000, n), seed=0)[0].mean())
    elif task == "kid_ours_float64":
        from medsynbench.metrics.kid import kid_subset_values
        value = float(kid_subset_values(real, fake, 100, min(1000, n), seed=0, precision="float64")[0].mean())
    elif task == "kid_torch_fidelity":
        from torch_fidelity.metric_kid import kid_features_to_metric
        value = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=100,
                                       kid_subset_size=min(1000, n), rng_seed=0, verbose=False, kid_degree=3,
                                       kid_gamma=None, kid_coef0=1)["kernel_inception_distance_mean"]
    elif task == "prdc_ours":
        from medsynbench.metrics.prdc import prdc
        value = prdc(real, fake, k=3)
    elif task == "prdc_pkg":
        import contextlib
        import io
        from prdc import compute_prdc
        with contextlib.redirect_stdout(io.StringIO()):
            value = {k: float(v) for k, v in compute_prdc(real, fake, nearest_k=3).items()}
    else:
        raise SystemExit(f"unknown task {task}")
    seconds = time.perf_counter() - t0
    print(json.dumps({"task": task, "seconds": seconds, "value": value, "peak_extra_mb": _rss_mb() - base,
                      "peak_rss_mb": _rss_mb()}))


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """Save a random-init torch-fidelity FID Inception state dict (made here, never the FID weights) to ``path``.

    torch-fidelity's constructor insists on loading a weights file, so loading is skipped once to get the
    randomly initialised network, whose state dict is then saved and loaded through the normal code path.
    """
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    placeholder = path.with_suffix(".placeholder.pth")
    torch.save({}, placeholder)
    torch.manual_seed(seed)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(placeholder))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
        placeholder.unlink()
    torch.save(net.state_dict(), path)
    return path


def run_eval_overhead(n: int, size: int, n_real: int, weights_dir: Path) -> dict:
    """(a) synthetic feature extraction alone; (b) = (a) + reading the cached real features +
    compute_feature_metrics with conf/metrics/default.yaml's metric list and options. Ratio (b)/(a)."""
    import tempfile

    import torch
    from omegaconf import OmegaConf

    from medsynbench.metrics import FeatureCache, compute_feature_metrics, get_extractor

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    mcfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "metrics" / "default.yaml"), resolve=True)
    names, options, seed = mcfg["feature_metrics"], mcfg["options"], mcfg.get("seed", 0)
    batch_size = mcfg.get("batch_size", 64)
    weights = random_inception_weights(weights_dir / "random_init_inception_fid_seed0.pth")
    ext = get_extractor("inception_fid", weights_path=str(weights))
    desc = ext.describe()
    assert not desc["standard_fid"], "random-init weights must never be reported as FID"
    g = torch.Generator().manual_seed(0)
    real_images = torch.rand(n_real, 1, size, size, generator=g) * 2 - 1
    fake_images = (torch.rand(n, 1, size, size, generator=g) * 2 - 1) * 0.9
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        key = {"dataset": "bench_random_images", "split": "test", "n": n_real, "size": size, "extractor": desc}
        cache.get_or_compute(key, lambda: ext.features(real_images, batch_size=batch_size, progress=False))

        def must_be_cached():
            raise RuntimeError("real features were not cached")
        t0 = time.perf_counter()
        fake_feats = ext.features(fake_images, batch_size=batch_size, progress=False)
        extract_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        real_feats = cache.get_or_compute(key, must_be_cached)
        cache_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = compute_feature_metrics(real_feats, fake_feats, names=names, extractor=desc, seed=seed, **options)
    metrics_s = time.perf_counter() - t0
    per_metric = {}  # where the metric time goes (each metric alone, same options)
    for name in names:
        t0 = time.perf_counter()
        compute_feature_metrics(real_feats, fake_feats, names=[name], extractor=desc, seed=seed, **options)
        per_metric[name] = time.perf_counter() - t0
    # the KID algorithm before this benchmark existed (each subset's Gram blocks, float64): what missed 1.2x
    from medsynbench.metrics import kid as kid_module
    t0 = time.perf_counter()
    for b in range(options.get("bootstrap", 0) + 1):
        sub = options["kid_subsets"] if b == 0 else options.get("bootstrap_kid_subsets", 10)
        m = min(options["kid_subset_size"], len(real_feats), len(fake_feats))
        ri, fi = kid_module.draw_subsets(len(real_feats), len(fake_feats), sub, m, seed + b)
        kid_module.mmd2_subsets(real_feats, fake_feats, ri, fi, precision="float64", route="subsets")
    previous_kid_s = time.perf_counter() - t0
    note = (f"Before: KID evaluated each subset's Gram blocks in float64, {previous_kid_s:.1f} s here for the "
            f"{options['kid_subsets']} + {options.get('bootstrap', 0)}x{options.get('bootstrap_kid_subsets', 10)} "
            f"bootstrap subsets (ratio ~{(extract_s + cache_s + metrics_s - per_metric['kid'] + previous_kid_s) / extract_s:.2f}); "
            "now every subset and bootstrap replicate is a count-vector quadratic form over one kernel matrix.")
    return {"task": "eval_overhead", "n_fake": n, "note": note, "previous_kid_s": previous_kid_s, "n_real": n_real, "image_size": size, "extractor": "inception_fid",
            "weights": f"random-init (seed 0, made by this script: {weights.name}); timings only, not FID",
            "metric_names": [r["metric"] for r in records], "feature_metrics": names, "options": options,
            "extract_s": extract_s, "cache_read_s": cache_s, "metrics_s": metrics_s, "per_metric_s": per_metric,
            "ratio": (extract_s + cache_s + metrics_s) / extract_s, "peak_rss_mb": _rss_mb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=1000, d=256 instead of N=10,000, d=2048")
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int)
    ap.add_argument("--d", type=int)
    ap.add_argument("--only", help="comma-separated task names to re-run (rows merged into the existing .json)")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "metrics"))
    ap.add_argument("--eval-n", type=int, default=500, help="synthetic images of the evaluation-overhead run")
    ap.add_argument("--eval-real", type=int, default=500, help="cached real images of the evaluation-overhead run")
    ap.add_argument("--eval-size", type=int, default=64, help="image size (px) of the evaluation-overhead run")
    ap.add_argument("--weights-dir", default=str(Path.home() / ".cache" / "medsynbench" / "bench_weights"),
                    help="where the random-init Inception weights are saved")
    args = ap.parse_args()
    n = args.n or (1000 if args.quick else 10000)
    d = args.d or (256 if args.quick else 2048)
    if args.task == "eval_overhead":
        return print(json.dumps(run_eval_overhead(args.eval_n, args.eval_size, args.eval_real, Path(args.weights_dir))))
    if args.task:
        return run_task(args.task, n, d)
    out = Path(args.out)
    rows, overhead, load = [], None, {"before": uptime()}
    only = set(args.only.split(",")) if args.only else None
    if only and out.with_suffix(".json").is_file():
        previous = json.loads(out.with_suffix(".json").read_text())
        rows = [r for r in previous["rows"] if r["task"] not in only]
        overhead = previous.get("eval_overhead") if "eval_overhead" not in only else None
    for task, (metric, impl) in TASKS.items():
        if only and task not in only:
            continue
        proc = subprocess.run([sys.executable, __file__, "--task", task, "--n", str(n), "--d", str(d)],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            rows.append({"task": task, "metric": metric, "implementation": impl, "error": proc.stderr[-500:]})
            print(f"{task}: FAILED\n{proc.stderr[-500:]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({**row, "metric": metric, "implementation": impl})
        print(f"{task}: {row['seconds']:.2f} s, +{row['peak_extra_mb']:.0f} MB, value {row['value']}")
    if not only or "eval_overhead" in only:
        proc = subprocess.run([sys.executable, __file__, "--task", "eval_overhead", "--eval-n", str(args.eval_n),
                               "--eval-real", str(args.eval_real), "--eval-size", str(args.eval_size),
                               "--weights-dir", args.weights_dir], capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            overhead = {"error": proc.stderr[-500:]}
            print(f"eval_overhead: FAILED\n{proc.stderr[-500:]}")
        else:
            overhead = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"eval_overhead: ratio {overhead['ratio']:.3f}")
    load["after"] = uptime()
    rows.sort(key=lambda r: list(TASKS).index(r["task"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n": n, "d": d, "threads": int(os.environ.get("BENCH_THREADS", "2")), "quick": args.quick,
            "features": "default_rng(0): real N(0,1), fake N(0.05,1), float32", "uptime": load}
    write_outputs(out, {"meta": meta, "rows": rows, "eval_overhead": overhead}, render_markdown(meta, rows, overhead))


def render_markdown(meta: dict, rows: list[dict], overhead: dict | None) -> str:
    n, d = meta["n"], meta["d"]
    lines = [f"# Metrics benchmark (N={n} per set, d={d}, {meta['threads']} threads)", "",
             "Same features for every implementation; one subprocess per row. FD rows start from the covariances.",
             "Peak memory = peak RSS above the RSS after loading the features. The machine is shared (2 cores):",
             f"load at the start `{meta['uptime'].get('before')}`, at the end `{meta['uptime'].get('after')}`; "
             "compare rows of one run only.", "",
             "| metric | implementation | time (s) | peak extra memory (MB) | value |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['metric']} | {r['implementation']} | failed | | {r['error'][-80:]!r} |")
        else:
            v = r["value"]
            vs = ", ".join(f"{k[0].upper()}={x:.4f}" for k, x in v.items()) if isinstance(v, dict) else f"{v:.9g}"
            lines.append(f"| {r['metric']} | {r['implementation']} | {r['seconds']:.2f} | {r['peak_extra_mb']:.0f} | {vs} |")
    lines += ["", "KID: the kernel matrix of the original rows is formed once in row blocks (upper triangle for the",
              "real-real and fake-fake blocks) and every subset is a count-vector quadratic form, so 100 subsets cost",
              "one pass; float32 products, float64 sums (see metrics/kid.py)."]
    if overhead:
        lines += ["", "## Evaluation overhead from cached real features", ""]
        if "error" in overhead:
            lines.append(f"failed: {overhead['error'][-300:]!r}")
        else:
            o = overhead
            total = o["extract_s"] + o["cache_read_s"] + o["metrics_s"]
            lines += [f"`{o['extractor']}` architecture with {o['weights']}; {o['n_fake']} synthetic and "
                      f"{o['n_real']} cached real {o['image_size']}-px grayscale images; metrics "
                      f"{', '.join(o['feature_metrics'])} with options {json.dumps(o['options'])} "
                      "(conf/metrics/default.yaml).", "",
                      "| step | time (s) |", "|---|---|",
                      f"| (a) synthetic feature extraction | {o['extract_s']:.2f} |",
                      f"| read cached real features | {o['cache_read_s']:.3f} |",
                      f"| compute_feature_metrics (all, with bootstrap CIs) | {o['metrics_s']:.2f} |",
                      f"| (b) = (a) + cache + metrics | {total:.2f} |",
                      f"| **ratio (b)/(a)** (target <= 1.2) | **{o['ratio']:.3f}** |", "",
                      "Each metric alone (same options): " + ", ".join(
                          f"{k} {v:.2f} s" for k, v in o["per_metric_s"].items()) + "."]
            if o.get("note"):
                lines += ["", o["note"]]
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()

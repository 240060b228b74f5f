"""Benchmark the results store's readers: today's path (``load_records`` + ``leaderboard``) against the compacted
columnar index (``benchmark.store_index``), measured in the same run; writes results/benchmarks/store.md + .json.

    python scripts/bench_store.py                  # 100,000 records (~2.3 GB in a temp dir under /tmp, deleted after)
    python scripts/bench_store.py --n 2000 --quick # checks the plumbing in under a minute
    python scripts/bench_store.py --reuse /tmp/bs  # keeps the generated store in /tmp/bs for the next run (delete it after)

The synthetic store copies the structure of a real quickstart record (schema 2, ~23 KB written with indent=2 as
``write_record`` does): ~140 flattened config keys of the real type mix, 18 metric records (KID/FD/PR/DC... with their
provenance fields, CI, preprocessing), 6 downstream records, data hashes and class counts, timings, versions.
The study: 4 datasets x 5 GANs x 5 training-set sizes x 5 learning rates x DiffAugment on/off = 1,000 configs x
10 seeds = 10,000 trainings, each evaluated at 10 checkpoints (``evaluate_step``) = 100,000 records.
Leaderboards measured: ``kid_unet`` with ``+filter.evaluate_step=<last>`` (automatic grouping, 1,000 rows over
10,000 records) and ``kid_unet`` over all 100,000 records grouped by ``[dataset.name, gan.name]`` (20 rows).
Today's path is measured on the first --old-n records (default 10,000) and, if --old-full, on all of them.
One process, one thread (the machine is shared).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _bench import uptime, write_outputs  # noqa: E402  (scripts/ is on sys.path when a script runs)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = ["isic_mini", "kvasir", "chexpert", "brats"]
GANS = ["dcgan", "wgan_gp", "lsgan", "hinge", "stylegan2"]
SIZES = [50, 100, 200, 500, None]
LRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3]
AUGS = [False, True]
N_SEEDS, N_STEPS = 10, 10
METRICS = ["kid_unet", "fd_unet", "fd_inf_unet", "precision_k3_unet", "recall_k3_unet", "density_k3_unet",
           "coverage_k3_unet", "r_fd_unet", "rel_fd_unet", "fd_rr_unet", "kid_rr_unet", "ms_ssim_fake", "ms_ssim_real",
           "delentropy_fake", "delentropy_real", "memorisation_min_dist", "memorisation_frac_close", "ssim_nn"]
DOWNSTREAM = [("dice_unet", "real"), ("dice_unet", "synthetic"), ("dice_unet", "real+synthetic"),
              ("acc_efficientnet", "real"), ("acc_efficientnet", "synthetic"), ("acc_efficientnet", "real+synthetic")]
WARN = "fewer samples (80) than feature dimensions (128): covariances are singular, FD is biased upwards"


def _config_template() -> dict:
    """~140 flattened config keys with the type mix of a real record (58 str, 32 int, 18 null, 17 float, 11 bool)."""
    kinds = ["str"] * 58 + ["int"] * 32 + ["none"] * 18 + ["float"] * 17 + ["bool"] * 11
    cfg, k = {}, 0
    for group, n in {"dataset": 12, "data": 16, "gan": 24, "train": 30, "metrics": 28, "downstream": 16,
                     "hydra_launcher": 5}.items():
        for j in range(n):
            kind = kinds[(k * 7) % len(kinds)]
            k += 1
            cfg[f"{group}.opt_{j:02d}"] = {"str": f"{group}_setting_{j}", "int": 16 * (j + 1), "none": None,
                                           "float": round(0.5 / (j + 1), 6), "bool": j % 2 == 0}[kind]
    return cfg


def make_record(i: int, cfg_template: dict) -> dict:
    """Record ``i`` of the synthetic study (deterministic)."""
    step_i, rest = i % N_STEPS, i // N_STEPS
    seed, rest = rest % N_SEEDS, rest // N_SEEDS
    combo = rest
    dataset = DATASETS[combo % 4]
    gan = GANS[(combo // 4) % 5]
    size = SIZES[(combo // 20) % 5]
    lr = LRS[(combo // 100) % 5]
    aug = AUGS[(combo // 500) % 2]
    step = 1000 * (step_i + 1)
    config = {"experiment_name": "study-v1", "dataset.name": dataset, "dataset.root": f"/scratch/data/{dataset}",
              "data.image_size": 64, "data.train_size": size, "gan.name": gan, "train.steps": 10000,
              "train.lr_g": lr, "train.lr_d": lr, "train.diffaugment": aug, "seed": seed,
              "evaluate_step": None if step == 10000 else step, "n_samples": 80, "metrics.seed": 0,
              "device": ["cuda", "cpu"][seed % 2], "num_threads": 4, "paths.results_dir": f"/scratch/r{seed}",
              "train.progress": False, **cfg_template}
    training_id = f"{dataset}-{gan}-n{size or 'all'}-s{seed}-{combo:06d}"
    evaluation_id = f"e{step:05d}{combo % 97:04d}"
    x = ((i * 2654435761) % 1000003) / 1000003.0  # deterministic pseudo-random in [0, 1)
    proto = {"extractor": "unet_encoder", "feature_dim": 128, "n_real": 80, "n_fake": 80,
             "weights": "trained here on training split sha256=7ce9cc64787bbaf0 (segmentation, 150 steps, seed=0)",
             "weights_sha256": f"{combo % 4:04d}" + "7" * 60, "implementation": "medsynbench 0.1.0",
             "precision": "mixed", "versions": "torch=2.14.1,numpy=2.4.6,scipy=1.17.1,torchmetrics=1.9.0",
             "preprocessing": json.dumps({"antialias": True, "gray_to_rgb": "none", "normalise": "minus_one_one",
                                          "resize": 64, "resize_filter": "bilinear"}, sort_keys=True)}
    metrics = []
    for j, name in enumerate(METRICS):
        v = 0.1 + x * (j + 1) + 0.01 * step_i
        metrics.append({**proto, "metric": name, "base_metric": name.split("_")[0], "value": v,
                        "higher_is_better": name.startswith(("precision", "recall", "density", "coverage", "r_fd")),
                        "bootstrap": 50, "ci_level": 0.95, "ci_low": v * 0.8, "ci_high": v * 1.2, "std": v * 0.05,
                        "ci_method": "percentile, both sets resampled with replacement, 10 subsets per replicate",
                        "seed": 0, "subset_size": 80, "subsets": 1, "k": 3 if "_k3_" in name else None,
                        "warning": WARN if name.startswith("fd_") else None})
    downstream = [{"metric": m, "train_on": on, "value": 0.5 + 0.4 * x - 0.01 * k, "higher_is_better": True,
                   "model": "Unet/resnet18" if m.startswith("dice") else "efficientnet_b0", "seed": seed,
                   "augment_flip": True, "batch_size": 16, "epochs": None, "final_train_loss": 0.48 + x,
                   "lr": 0.001, "n_test": 80, "n_train_real": 160, "n_train_synthetic": 0 if on == "real" else 160,
                   "optimizer": "adam", "seconds": 12.8 + x, "steps": 60, "task": "segmentation",
                   "weights": "random-init"} for k, (m, on) in enumerate(DOWNSTREAM)]
    collapsed = x < 0.02
    return {
        "schema_version": 2, "run_id": training_id, "training_id": training_id, "evaluation_id": evaluation_id,
        "record_id": f"{training_id}--{evaluation_id}", "status": "failed" if x > 0.995 else "completed",
        "seed": seed, "dataset": dataset, "gan": gan, "train_size": size, "experiment": "study-v1",
        "device": config["device"], "evaluated_step": step, "evaluation_only": step_i > 0, "steps_done": 10000,
        "n_samples": 80, "mask_source": "generated", "resumed_from": None,
        "run_dir": f"results/runs/{training_id}", "git_commit": "aaab9ed571731da70c2cb93ddb7dc0daf0ac5e72",
        "recorded_at": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}."
                       f"{i % 1000000:06d}+00:00",
        "collapsed": collapsed,
        "collapse_reasons": ["mode_collapse: recall_k3_unet=0 <= 0.02 and coverage_k3_unet=0.03 <= 0.1"]
        if collapsed else [],
        "collapse_check": {"checked": ["no_overlap[unet_encoder]", "mode_collapse[unet_encoder]",
                                       "low_diversity[ms_ssim]"], "thresholds": {"recall": 0.02, "coverage": 0.1}},
        "config": config, "metrics": metrics, "downstream": downstream,
        "data": {"class_counts": {"test": {"melanoma": 16, "nevus": 57, "seborrheic_keratosis": 7},
                                  "train": {"melanoma": 32, "nevus": 110, "seborrheic_keratosis": 18}},
                 "hashes": {s: f"{(i + len(s)) % 9973:064d}" for s in ("train", "test", "masks", "labels")}},
        "final_losses": {"loss_d": 0.83 + x, "loss_g": 3.26 - x, "loss_g_adv": 3.26 - x},
        "timings": {k: 10 * x + j for j, k in enumerate(("data_s", "train_s", "sample_s", "extractor_s",
                                                          "features_s", "metrics_s", "downstream_s", "total_s"))},
        "versions": {"hydra-core": "1.3.8", "medsynbench": "0.1.0", "numpy": "2.4.6", "pandas": "3.1.1",
                     "torch": "2.14.1", "torchvision": "0.29.1", "scipy": "1.17.1", "python": "3.12.3"},
        "artifacts": {"memorisation_grid": f"results/runs/{training_id}/evaluations/{evaluation_id}/closest.png"},
    }


def write_store(store: Path, start: int, stop: int, cfg_template: dict, bump: str | None = None) -> None:
    """Records ``start..stop-1`` as ``write_record`` lays them out (indent=2, sorted keys, hidden temporary +
    ``os.replace``; without write_record's fsync, which would dominate generating 100,000 files)."""
    folder = store / "records"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rec = make_record(i, cfg_template)
        if bump:  # a re-evaluation: new numbers, newer recorded_at, same file name
            rec["recorded_at"] = bump
            for m in rec["metrics"]:
                m["value"] += 1.0
        path = folder / f"{rec['record_id']}.json"
        tmp = folder / f".{path.name}.bench.tmp"
        tmp.write_bytes(json.dumps(rec, indent=2, sort_keys=True, default=str).encode())
        os.replace(tmp, path)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _du_mb(folder: Path) -> float:
    return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="records in the store")
    ap.add_argument("--old-n", type=int, default=10_000, help="records on which today's path is measured")
    ap.add_argument("--old-full", action="store_true", help="also measure today's path on all --n records")
    ap.add_argument("--new", type=int, default=1000, help="records added before the incremental refresh")
    ap.add_argument("--replace", type=int, default=100, help="records re-evaluated (files replaced)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary store")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store")
    ap.add_argument("--reuse", default=None, help="folder holding the generated store (made there if missing and "
                    "kept, restored to its n records after the run): skips regenerating 100,000 files")
    ap.add_argument("--quick", action="store_true", help="small run for the plumbing (--n 2000 --old-n 1000)")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "store"))
    args = ap.parse_args()
    if args.quick:
        args.n, args.old_n, args.new, args.replace = min(args.n, 2000), min(args.old_n, 1000), 100, 20
    from medsynbench.benchmark.leaderboard import leaderboard
    from medsynbench.benchmark.store import load_records
    from medsynbench.benchmark.store_index import index_dir, metric_table_from_store, refresh_index

    boards = {"auto": dict(metric="kid_unet", where={"evaluate_step": 10000}),
              "grouped": dict(metric="kid_unet", group_by=["dataset.name", "gan.name"])}
    tmp = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.tmp))
    store, old_store = tmp / "store", tmp / "old"  # old: hard links to the first old_n records of store
    res: dict = {"n": args.n, "old_n": args.old_n, "n_new": args.new, "replace": args.replace,
                 "uptime_before": uptime(), "boards": {k: {kk: str(vv) for kk, vv in v.items()}
                                                         for k, v in boards.items()}}
    cfg = _config_template()
    try:
        # today's path on the first old_n records (and on all of them if asked)
        marker = store / f".complete-{args.n}"
        t, _ = (0.0, None) if marker.exists() else _timed(lambda: write_store(store, 0, args.n, cfg))
        marker.touch()
        res["generate_s"] = t
        shutil.rmtree(old_store, ignore_errors=True)
        (old_store / "records").mkdir(parents=True)
        for i in range(args.old_n):
            name = f"{make_record(i, cfg)['record_id']}.json"
            os.link(store / "records" / name, old_store / "records" / name)
        res["record_bytes"] = _du_mb(old_store / "records") * 1e6 / args.old_n
        res["uptime_timed_start"] = uptime()

        def old_path(kind, where=old_store):
            t_load, recs = _timed(lambda: load_records(where))
            t_board, board = _timed(lambda: leaderboard(recs, **boards[kind]))
            return t_load, t_board, board

        def new_path(kind, where=store):
            t_read, table = _timed(lambda: metric_table_from_store(where, boards[kind]["metric"]))
            t_board, board = _timed(lambda: leaderboard(table, **boards[kind]))
            return t_read, t_board, board

        res["old"] = {}
        for kind in boards:
            t_load, t_board, board_old = old_path(kind)
            res["old"][kind] = {"n": args.old_n, "load_s": t_load, "leaderboard_s": t_board,
                                "total_s": t_load + t_board, "rows": len(board_old)}
            print(f"old path {kind} @ {args.old_n}: load {t_load:.1f} s, leaderboard {t_board:.1f} s", flush=True)
        # index at old_n: equality check with the old path
        t, _ = _timed(lambda: refresh_index(old_store))
        res["build_old_n_s"] = t
        eq = {}
        for kind in boards:
            _, _, a = old_path(kind)
            _, _, b = new_path(kind, old_store)
            try:
                import pandas as pd
                pd.testing.assert_frame_equal(a, b, check_exact=True)
                eq[kind] = a.attrs == b.attrs
            except AssertionError:
                eq[kind] = False
        res["identical_at_old_n"] = eq
        res["new_old_n"] = {}
        for kind in boards:  # the index path on the same old_n records: the same-run ratio, both measured
            times = [new_path(kind, old_store) for _ in range(3)]
            best = min(times, key=lambda x: x[0] + x[1])
            res["new_old_n"][kind] = {"read_s": best[0], "leaderboard_s": best[1], "total_s": best[0] + best[1]}
        print(f"identical boards at {args.old_n}: {eq}", flush=True)
        # the rest of the store
        res["store_mb"] = _du_mb(store / "records")
        shutil.rmtree(index_dir(store), ignore_errors=True)
        t, out = _timed(lambda: refresh_index(store))
        res["build_full_s"] = t
        res["index_mb"] = _du_mb(index_dir(store))
        print(f"full build @ {args.n}: {t:.1f} s, index {res['index_mb']:.0f} MB", flush=True)
        t, out = _timed(lambda: refresh_index(store))
        res["refresh_noop_s"] = t
        res["new"] = {}
        for kind in boards:
            times = [new_path(kind) for _ in range(3)]
            best = min(times, key=lambda x: x[0] + x[1])
            res["new"][kind] = {"n": args.n, "read_s": best[0], "leaderboard_s": best[1], "total_s": best[0] + best[1],
                                "rows": len(best[2]), "all_total_s": [a + b for a, b, _ in times]}
            print(f"index {kind} @ {args.n}: read {best[0]:.2f} s, leaderboard {best[1]:.2f} s", flush=True)
        if args.old_full:
            res["old_full"] = {}
            for kind in boards:
                t_load, t_board, _ = old_path(kind, store)
                res["old_full"][kind] = {"load_s": t_load, "leaderboard_s": t_board, "total_s": t_load + t_board}
        # incremental: new records, then replaced records
        write_store(store, args.n, args.n + args.new, cfg)
        t, out = _timed(lambda: refresh_index(store))
        res["refresh_new_s"], res["refresh_new"] = t, out
        print(f"refresh after {args.new} new: {t:.2f} s {out}", flush=True)
        step = max(1, args.n // args.replace)
        for i in range(0, args.n, step):
            write_store(store, i, i + 1, cfg, bump="2027-01-01T00:00:00+00:00")
        t, out = _timed(lambda: refresh_index(store))
        res["refresh_replace_s"], res["refresh_replace"] = t, out
        print(f"refresh after {args.replace} replaced: {t:.2f} s {out}", flush=True)
        t, out = _timed(lambda: new_path("grouped"))
        res["after_refresh_grouped_s"] = out[0] + out[1]
        time.sleep(2.5)
        refresh_index(store)  # remembers the folder's mtime now that it is older than the file system's tick
        out = min((new_path("grouped") for _ in range(3)), key=lambda x: x[0] + x[1])
        res["after_refresh_grouped2_s"] = out[0] + out[1]
        t, out = _timed(lambda: refresh_index(store, compact=True))
        res["compact_s"] = t
    finally:
        res["uptime_after"] = uptime()
        if args.reuse:  # back to the n generated records, no index
            for i in range(args.n, args.n + args.new):
                with contextlib.suppress(FileNotFoundError):
                    (store / "records" / f"{make_record(i, cfg)['record_id']}.json").unlink()
            for i in range(0, args.n, max(1, args.n // args.replace)):
                write_store(store, i, i + 1, cfg)
            shutil.rmtree(index_dir(store), ignore_errors=True)
            shutil.rmtree(old_store, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    write_outputs(args.out, res, render_markdown(res))


def render_markdown(r: dict) -> str:
    n, on = r["n"], r["old_n"]
    scale = n / on
    lines = [f"# Results store benchmark ({n:,} records, {r['record_bytes'] / 1e3:.0f} KB each, "
             f"{r['store_mb'] / 1e3:.2f} GB)", "",
             "One process, one thread, shared 2-core machine (load average before: `" + r["uptime_before"] + "`, "
             "at the start of the timed part: `" + r.get("uptime_timed_start", "?") + "`, after: `"
             + r["uptime_after"] + "`). Synthetic store copying a real record's structure (scripts/bench_store.py).",
             "Today's path = `load_records` + `leaderboard(records)` (parses every file, builds `metric_table` of all",
             "metrics; the leaderboard code is today's, so only the reading differs: a conservative ratio).",
             "Index path = `metric_table_from_store(store, metric)` (refreshes the index: up to date here, one",
             "`state.json` read) + `leaderboard(table)`; best of 3 in one process (first call in brackets: it pays",
             "one-off allocation and kernel set-up).", "",
             "| leaderboard | today's path @ %s | index @ %s | ratio @ %s (same run, measured) | today's path @ %s "
             "| index @ %s (read + board) | ratio @ %s |" % (f"{on:,}", f"{on:,}", f"{on:,}", f"{n:,}", f"{n:,}",
                                                             f"{n:,}"), "|---|---|---|---|---|---|---|"]
    for kind, label in (("auto", f"`kid_unet`, `+filter.evaluate_step=10000`, automatic grouping "
                                 f"({r['new']['auto']['rows']} rows)"),
                        ("grouped", f"`kid_unet` over all records, `group_by=[dataset.name, gan.name]` "
                                    f"({r['new']['grouped']['rows']} rows)")):
        o, nw, small = r["old"][kind], r["new"][kind], r["new_old_n"][kind]
        full = r.get("old_full", {}).get(kind)
        big = full["total_s"] if full else o["total_s"] * scale
        big_s = f"{big:.1f} s (measured)" if full else f"≈ {big:.0f} s (×{scale:g}, extrapolated)"
        ratio_s = f"**{big / nw['total_s']:.0f}×**" + ("" if full else " (extrapolated)")
        lines.append(f"| {label} | {o['total_s']:.1f} s (load {o['load_s']:.1f} + board {o['leaderboard_s']:.1f}) "
                     f"| {small['total_s']:.2f} s | **{o['total_s'] / small['total_s']:.0f}×** | {big_s} "
                     f"| **{nw['total_s']:.2f} s** ({nw['read_s']:.2f} + {nw['leaderboard_s']:.2f}; first call "
                     f"{nw['all_total_s'][0]:.2f}) | {ratio_s} |")
    lines += ["", "| index operation | time | target |", "|---|---|---|",
              f"| first full build, {n:,} records | {r['build_full_s']:.1f} s "
              f"({r['build_full_s'] / n * 1e3:.2f} ms/record; index {r['index_mb']:.0f} MB) | |",
              f"| refresh, nothing new | {r['refresh_noop_s']:.3f} s | |",
              f"| incremental refresh after {r['n_new']:,} new records | **{r['refresh_new_s']:.2f} s** | ≤ 2 s |",
              f"| incremental refresh after {r['replace']} replaced records | {r['refresh_replace_s']:.2f} s | |",
              f"| grouped leaderboard right after those refreshes ({r['refresh_replace']['parts']} parts; its refresh "
              f"lists the folder again: written < 2 s before) | {r['after_refresh_grouped_s']:.2f} s | ≤ 1 s |",
              f"| the same, once the folder's mtime is remembered | {r['after_refresh_grouped2_s']:.2f} s | ≤ 1 s |",
              f"| compaction into one part | {r['compact_s']:.1f} s | |", "",
              f"Identical leaderboards (DataFrame and attrs, exact) index vs today's path at {on:,} records: "
              + ", ".join(f"{k}: {v}" for k, v in r["identical_at_old_n"].items()) + ".",
              f"Generating the store: {r['generate_s']:.0f} s (0: reused; not part of any figure)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The must-show demo: a 3-site federation (FedAvg over Flower, gRPC on loopback) on ISIC 2018 next to local-only
and central training of the same compute, at CPU scale.

    python -m medsynbench.benchmark.federated.demo results/federated_demo [--work-dir DIR] [hydra overrides...]

Runs, stores and caches go to ``--work-dir`` (default: ``$TMPDIR/medsynbench_federated_demo``, outside the
repository; a rerun resumes or reuses them). ``<out>`` receives only ``curves.csv``, ``curves.json``, ``summary.md``
(partition, rounds for each client to reach a target FD, final scores of global / local / central) and
``fd_vs_round.png``. ISIC 2018 as staged has no patient or lesion id: the clients are random image partitions.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# 32 px, the whole training split (1,503 labelled images: 88 / 530 / 884 at 2:12:20) and test split, a narrow DCGAN,
# 10 rounds x 40 steps per client (central: 120 steps per round), FD / KID / PRDC in the U-Net-encoder space.
SMALL = ["dataset=isic2018", "data.image_size=32", "device=auto", "gan=dcgan", "gan.g_filters=32", "gan.d_filters=32",
         "train.batch_size=16", "federated.rounds=10", "federated.local_steps=40",
         "metrics.feature_metrics=[fd,kid,prdc]", "metrics.image_metrics=[]", "metrics.options.bootstrap=0",
         "metrics.options.kid_subsets=20", "downstream=none", "num_threads=1", "train.progress=false"]
MODES = (("three_site", "flower"), ("local_only", "local_only"), ("central", "central"))


def run_modes(work: Path, extra: list[str]) -> dict[str, float]:
    walls = {}
    for preset, mode in MODES:
        cmd = [sys.executable, "-m", "medsynbench", "train", f"federated={preset}", *SMALL,
               f"paths.results_dir={work / 'results'}", *extra]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        walls[mode] = time.perf_counter() - t0
    return walls


def summary_markdown(frame, conv, final, targets, metric: str, walls: dict, extra: list[str]) -> str:
    rec_partition = frame.attrs.get("partition") or {}
    lines = ["# Federated vs local-only vs central training: ISIC 2018, 3 clients (CPU scale)", "",
             "Command: `python -m medsynbench.benchmark.federated.demo " + " ".join(["<out>", *extra]) + "`", "",
             "Settings: " + ", ".join(f"`{s}`" for s in SMALL + extra), "",
             "Partition: " + (f"by {rec_partition.get('by')}" if rec_partition else "?") +
             " (ISIC 2018 as staged has no patient or lesion id, so the clients are **random image partitions**, "
             "not patient-disjoint), ratios 2:12:20, class proportions kept:", "",
             "| client | train images | test images | train classes |", "|---|---|---|---|"]
    for c in rec_partition.get("clients", []):
        lines.append(f"| {c['client']} | {c['n_train']} | {c['n_test']} | "
                     + ", ".join(f"{k} {v}" for k, v in (c.get("train_classes") or {}).items()) + " |")
    lines += ["", "Equal compute: each federated or local-only client trains `local_steps` per round; central trains "
              "3 x `local_steps` per round on the pooled data. Every model is scored on each client's own held-out "
              "split. Wall time: " + ", ".join(f"{m} {w / 60:.1f} min" for m, w in walls.items()) + ".", "",
              f"## Rounds to reach the target {metric}", "",
              "Target per client: the best final value any mode reaches at that client + 10%.", "",
              conv.astype(object).where(conv.notna(), "not reached").to_markdown(index=False, floatfmt=".3g"), "",
              "## Final scores (last round)", "", final.to_markdown(index=False, floatfmt=".4g"), "",
              "## Per-round curves", "", "![FD vs round](fd_vs_round.png)", "",
              _curve_table(frame, metric), ""]
    return "\n".join(lines)


def _curve_table(frame, metric: str) -> str:
    from medsynbench.benchmark.federated.curves import main_curves

    c = main_curves(frame, metric)
    c["series"] = c["mode"] + " c" + c["client"]
    wide = c.pivot(index="round", columns="series", values="value")
    return f"{metric} per round (rows) for each mode and client (columns):\n\n" + wide.to_markdown(floatfmt=".2f")


def main(argv: list[str] | None = None) -> Path:
    from medsynbench.benchmark.federated import curves as C
    from medsynbench.benchmark.store import load_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "medsynbench_federated_demo")
    ap.add_argument("--no-run", action="store_true", help="only rebuild the outputs from the work dir's store")
    args, extra = ap.parse_known_args(argv)
    out, work = args.out, args.work_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.no_run:
        walls = json.loads((out / "curves.json").read_text()).get("wall_s", {}) if (out / "curves.json").is_file() else {}
    else:
        walls = run_modes(work, extra)
    records = load_records(work / "results" / "store")
    frame = C.curve_rows(records)
    frame = frame[frame["mode"].isin([m for _, m in MODES])]
    metric = C.fd_metric(frame)
    conv, final, targets = C.summary_tables(frame, metric)
    part = next((r["federated"].get("partition") for r in records if r.get("federated", {}).get("mode") == "flower"),
                None)
    frame.attrs["partition"] = part
    frame.to_csv(out / "curves.csv", index=False)
    (out / "curves.json").write_text(json.dumps({"metric": metric, "targets": targets, "partition": part,
                                                 "wall_s": walls, "rows": frame.to_dict("records")}, indent=1,
                                                default=str))
    png = C.plot_curves(frame, out / "fd_vs_round.png", metric, targets)
    (out / "summary.md").write_text(summary_markdown(frame, conv, final, targets, metric, walls, extra))
    print(png)
    print((out / "summary.md").read_text())
    return out


if __name__ == "__main__":
    main()

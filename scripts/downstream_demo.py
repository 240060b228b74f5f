"""Downstream utility demo (issue 11): every scenario (real, real_augmented, synthetic, real+synthetic, real_balanced)
on ISIC 2018 (segmentation) and BreastMNIST (classification) from ../shared/data, at CPU scale (32 px, a briefly
trained class-conditional DCGAN, a small task model), with bootstrap CIs, validation + early stopping, feature maps.

    .venv/bin/python scripts/downstream_demo.py [out_dir]      # default results/downstream_demo

Writes the runs and store under <out_dir>/results, the table to <out_dir>/scores.md and prints it with the wall time.
The numbers test the pipeline at CPU scale, not the GANs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from medsynbench import config_dir
from medsynbench.benchmark.config import register_configs
from medsynbench.benchmark.run import execute_run

SCENARIOS = "[real,real_augmented,synthetic,real+synthetic,real_balanced]"
COMMON = ["device=auto", "data.image_size=32", "metrics=smoke", "train=smoke", "train.steps=300", "train.batch_size=32",
          "train.checkpoint_every=300", "train.sample_every=300", "gan=cgan", "gan.g_filters=32", "gan.d_filters=32",
          f"downstream.train_on={SCENARIOS}", "downstream.steps=60", "downstream.batch_size=16",
          "downstream.val_fraction=0.15", "downstream.patience=3", "downstream.val_every=10", "downstream.mix_ratio=1.0",
          "downstream.progress=false", "+downstream.maps={enabled: true, max_points: 300}", "seed=0",
          "experiment_name=downstream-demo"]
RUNS = {
    "isic2018 (segmentation)": ["dataset=isic2018", "data.train_size=300", "downstream=unet_seg",
                                "downstream.encoder_depth=3", "downstream.decoder_channels=[32,16,8]"],
    "breastmnist (classification)": ["dataset=breastmnist", "downstream=efficientnet_cls"],
}


def main(out: Path) -> None:
    register_configs()
    rows, t_all = [], time.perf_counter()
    for title, overrides in RUNS.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            cfg = compose("config", overrides=[*COMMON, *overrides, f"paths.results_dir={out / 'results'}"])
        t0 = time.perf_counter()
        record = execute_run(cfg)
        print(f"{title}: {record['status']} in {time.perf_counter() - t0:.0f} s; run dir {record['run_dir']}")
        for d in record["downstream"]:
            if d.get("skipped"):
                rows.append((title, d["train_on"], d["metric"], "skipped: " + d["reason"], "", "", ""))
                continue
            if "_class" in d["metric"]:
                continue
            counts = f"{d['n_train_real']} + {d['n_train_synthetic']}"
            if d.get("balance"):
                counts += f" (classes {d['balance']['class_counts_train']})"
            best = f"{d.get('best_step')}/{d.get('steps_run')}" + (" early" if (d.get("validation") or {}).get(
                "stopped_early") else "")
            rows.append((title, d["train_on"], d["metric"], f"{d['value']:.3f}",
                         f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]", counts, best))
        for k, v in sorted(record.get("artifacts", {}).items()):
            if k.startswith("map_"):
                print(f"  {k}: {v}")
    lines = ["| dataset | train_on | metric | value | 95% CI (bootstrap over test images) | train images real + synthetic "
             "| best step / steps run |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + f"\n\nwall time {time.perf_counter() - t_all:.0f} s\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/downstream_demo").resolve())

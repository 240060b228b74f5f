"""Fréchet distance of every checkpoint of a run, against the real test split.

    python scripts/fd_over_checkpoints.py results/runs/<run id> [--n 200] [--device cpu]

Prints a table and writes <run dir>/fd_over_checkpoints.json. Uses the run's first configured extractor (e.g. the
U-Net encoder trained on the real training split), so no downloaded weights are needed.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medsynbench.benchmark.config import register_configs
from medsynbench.benchmark.curves import fd_over_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n", type=int, default=None, help="synthetic samples per checkpoint (default: test size)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    register_configs()
    rows = fd_over_checkpoints(args.run_dir, n_samples=args.n, device=args.device)
    out = args.run_dir / "fd_over_checkpoints.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"{'step':>8}  fd_{rows[0]['extractor'] if rows else ''}")
    for row in rows:
        print(f"{row['step']:>8}  {row['fd']:.4f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()

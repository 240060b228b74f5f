"""Print (and optionally write) the trials of an Optuna study of `medsynbench train --multirun +sweep=optuna_*`.

    python scripts/optuna_summary.py results/optuna/<study>.db                 # the study in that SQLite file
    python scripts/optuna_summary.py sqlite:///results/optuna/x.db --study x   # any SQLAlchemy URL, a named study
    python scripts/optuna_summary.py results/optuna/<study>.db --out results/optuna/<name>   # + summary.json/.md

One row per trial: number, state, objective value, parameters, the run's training id and the error of a failed
trial; then the best trial and its configuration as `medsynbench train` overrides.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def storage_url(arg: str) -> str:
    return arg if "://" in arg else f"sqlite:///{arg}"


def load(storage: str, study_name: str | None = None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
    if study_name is None:
        if len(names) != 1:
            raise SystemExit(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}): pass --study")
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def summarise(study) -> dict:
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                       "training_id": t.user_attrs.get("training_id"), "error": t.user_attrs.get("error"),
                       "start": str(t.datetime_start) if t.datetime_start else None,
                       "end": str(t.datetime_complete) if t.datetime_complete else None,
                       "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                       if t.datetime_complete and t.datetime_start else None})
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out = {"study_name": study.study_name, "direction": study.direction.name.lower(), "n_trials": len(trials),
           "states": {s: sum(t["state"] == s for t in trials) for s in sorted({t["state"] for t in trials})},
           "trials": trials}
    if complete:
        best = study.best_trial
        fixed = {k: v for k, v in best.user_attrs.items()
                 if k not in ("training_id", "evaluation_id", "status", "error", "medsynbench_sweeper")}
        out["best"] = {"number": best.number, "value": best.value, "params": best.params,
                       "fixed_params": fixed, "training_id": best.user_attrs.get("training_id"),
                       "overrides": [f"{k}={v}" for k, v in {**fixed, **best.params}.items()]}
    return out


def markdown(summary: dict) -> str:
    keys = sorted({k for t in summary["trials"] for k in t["params"]})
    short = [k.split(".")[-1] for k in keys]
    lines = [f"# Optuna study `{summary['study_name']}` ({summary['direction']})", "",
             f"{summary['n_trials']} trials: " + ", ".join(f"{n} {s}" for s, n in summary["states"].items()), "",
             "| # | state | value | " + " | ".join(short) + " | training id | s |",
             "|---|---|---|" + "---|" * len(keys) + "---|---|"]
    for t in summary["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.5g}"
        cells = [str(t["params"].get(k, "")) for k in keys]
        secs = "" if t["seconds"] is None else f"{t['seconds']:.0f}"
        lines.append(f"| {t['number']} | {t['state']} | {value} | " + " | ".join(cells)
                     + f" | {t['training_id'] or ''} | {secs} |")
    failed = [t for t in summary["trials"] if t["error"]]
    if failed:
        lines += ["", "Failed trials:"] + [f"- {t['number']}: {t['error']}" for t in failed]
    if "best" in summary:
        b = summary["best"]
        lines += ["", f"**Best: trial {b['number']}, value {b['value']:.6g}** (training id `{b['training_id']}`)", "",
                  "```", "medsynbench train " + " ".join(b["overrides"]), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("storage", help="SQLite file or SQLAlchemy URL")
    parser.add_argument("--study", default=None, help="study name (needed when the storage holds several)")
    parser.add_argument("--out", default=None, help="folder for summary.json and summary.md")
    args = parser.parse_args(argv)
    summary = summarise(load(storage_url(args.storage), args.study))
    text = markdown(summary)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (out / "summary.md").write_text(text)
        print(f"written {out / 'summary.json'} and {out / 'summary.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

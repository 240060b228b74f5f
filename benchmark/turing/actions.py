"""What each ``medsynbench turing <action>`` does (called by the Hydra app in benchmark/cli.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from medsynbench.benchmark.turing.config import ACTIONS
from medsynbench.benchmark.validate import ConfigError


def _base_url(cfg) -> str:
    return str(cfg.base_url or f"http://{cfg.host}:{cfg.port}")


def _print_links(cfg, lines: list[str]) -> None:
    print("\n".join(lines))
    if cfg.links_file:
        from medsynbench.benchmark.turing.create import write_links

        write_links(cfg.links_file, lines)
        print(f"[medsynbench] links also appended to {cfg.links_file} (mode 600)")
    print("[medsynbench] tokens are stored hashed only: keep these links, they cannot be shown again")


def _study(cfg) -> Path:
    path = Path(cfg.study_dir)
    if not (path / "study.sqlite").is_file():
        raise ConfigError(f"study_dir={path} holds no study (study.sqlite); create one with "
                          "`medsynbench turing create study_dir=...`")
    return path


def run_action(cfg) -> None:
    action = cfg.action
    if action not in ACTIONS:
        raise ConfigError(f"unknown turing action {action!r}; choose one of {', '.join(ACTIONS)} "
                          "(`medsynbench turing <action> [key=value ...]`)")
    if action == "create":
        from medsynbench.benchmark.turing.create import create_study, describe, link

        summary = create_study(cfg)
        print(f"[medsynbench] {describe(summary)}")
        base = _base_url(cfg)
        lines = [f"admin: {link(base, 'admin', summary['admin_token'])}"]
        lines += [f"rater {name}: {link(base, 'r', tok)}" for name, tok in summary["rater_tokens"].items()]
        _print_links(cfg, lines)
        print(f"[medsynbench] serve it with: medsynbench turing serve study_dir={summary['study_dir']}")
    elif action == "add-rater":
        from medsynbench.benchmark.turing import db
        from medsynbench.benchmark.turing.create import link

        if not cfg.rater:
            raise ConfigError("add-rater needs rater=<name>")
        conn = db.connect(_study(cfg))
        try:
            token = db.add_rater(conn, str(cfg.rater))
        except ValueError as err:
            raise ConfigError(f"rater={cfg.rater}: {err}") from None
        finally:
            conn.close()
        _print_links(cfg, [f"rater {cfg.rater}: {link(_base_url(cfg), 'r', token)}"])
    elif action == "progress":
        from medsynbench.benchmark.turing import db

        if cfg.format not in ("table", "json"):
            raise ConfigError(f"format must be table or json, got {cfg.format!r}")
        conn = db.connect(_study(cfg))
        try:
            rows = db.progress(conn)
        finally:
            conn.close()
        if cfg.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            print("\n".join([f"{'rater':<24} {'answered':>12}  finished"] +
                            [f"{r['rater']:<24} {r['answered']:>5} / {r['total']:<5}  {'yes' if r['finished'] else 'no'}"
                             for r in rows] or ["(no raters)"]))
    elif action == "results":
        from medsynbench.benchmark.turing.results import summary_text, write_results

        if not 0 < cfg.ci < 1:
            raise ConfigError(f"ci must be in (0, 1), got {cfg.ci}")
        out = write_results(_study(cfg), cfg.out_dir, float(cfg.ci))
        print(summary_text(out["result"]))
        print(f"[medsynbench] written {out['out_dir']}: tables (.md, .csv), figures/, results.html, results.json")
    elif action == "serve":
        from medsynbench.benchmark.turing.server import serve

        study = _study(cfg)
        print(f"[medsynbench] serving {study} on http://{cfg.host}:{cfg.port} (Ctrl-C stops; answers are saved "
              "as they come)", flush=True)
        if cfg.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"[medsynbench] host={cfg.host}: reachable from other machines; links carry secret tokens over "
                  "plain HTTP, use it only on a trusted network", file=sys.stderr)
        serve(study, cfg.host, int(cfg.port))

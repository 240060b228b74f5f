"""Collapse detection from a run's metric records (library function; the evaluation stores its result).

A generator is flagged ``collapsed`` when at least one rule fires (thresholds are keyword arguments):

1. ``no_overlap``: precision, recall and coverage all <= ``prc_max`` (0.05) for one extractor — almost no synthetic
   sample lies on the real manifold and almost no real sample is reproduced (noise, a constant, a dead generator).
2. ``mode_collapse``: recall <= ``recall_max`` (0.02) and coverage <= ``coverage_max`` (0.10) for one extractor —
   the synthetic set reproduces almost none of the real data. A generator that emits one point has recall 0 (its
   k-NN balls have radius 0) and coverage about k / n_real (the point falls into roughly k real k-NN balls), i.e.
   0.0375 at the quickstart's 80 real images with k = 3; a healthy generator has coverage near 1 at k = 3 (~0.5
   for a poor but varied one), so 0.10 separates the two with room on both sides.
3. ``low_diversity``: the synthetic set's MS-SSIM diversity (1 - mean pairwise MS-SSIM) is below
   ``diversity_ratio`` (0.25) times the real set's, read from the ``msssim_fake`` record (value = synthetic mean
   pairwise MS-SSIM, ``real_value`` = the real set's, same pairs count and seed). Identical images give 0.

Records missing for a rule are skipped (``checked`` lists the rules that could be evaluated), so a run without
precision/recall/coverage or MS-SSIM is never flagged by them — and never certified as healthy by them either.
"""
from __future__ import annotations

from collections import defaultdict


def _base(rec: dict) -> str | None:
    """Base metric name of a record (``precision_k3_unet`` -> ``precision``)."""
    if rec.get("base_metric"):
        return rec["base_metric"]
    name = str(rec.get("metric") or "")
    return next((b for b in ("precision", "recall", "coverage", "density") if name.startswith(b + "_")), name)


def detect_collapse(metric_records: list[dict], prc_max: float = 0.05, recall_max: float = 0.02,
                    coverage_max: float = 0.10, diversity_ratio: float = 0.25) -> dict:
    """``{"collapsed": bool, "reasons": [str, ...], "thresholds": {...}, "checked": [rule, ...]}``."""
    thresholds = {"prc_max": prc_max, "recall_max": recall_max, "coverage_max": coverage_max,
                  "diversity_ratio": diversity_ratio}
    reasons: list[str] = []
    checked: list[str] = []
    by_extractor: dict[str, dict[str, tuple[str, float]]] = defaultdict(dict)
    for rec in metric_records:
        base = _base(rec)
        if base in ("precision", "recall", "coverage") and rec.get("value") is not None:
            by_extractor[str(rec.get("extractor"))][base] = (rec["metric"], float(rec["value"]))
    for extractor, vals in sorted(by_extractor.items()):
        if len(vals) == 3:
            checked.append(f"no_overlap[{extractor}]")
            if all(v <= prc_max for _, v in vals.values()):
                shown = ", ".join(f"{name}={v:.3g}" for name, v in vals.values())
                reasons.append(f"no_overlap: {shown} (all <= {prc_max})")
        if "recall" in vals and "coverage" in vals:
            checked.append(f"mode_collapse[{extractor}]")
            (rn, rv), (cn, cv) = vals["recall"], vals["coverage"]
            if rv <= recall_max and cv <= coverage_max:
                reasons.append(f"mode_collapse: {rn}={rv:.3g} <= {recall_max} and {cn}={cv:.3g} <= {coverage_max}")
    for rec in metric_records:
        if rec.get("metric") == "msssim_fake" and rec.get("real_value") is not None:
            checked.append("low_diversity")
            div_fake, div_real = 1 - float(rec["value"]), 1 - float(rec["real_value"])
            if div_fake < diversity_ratio * div_real:
                reasons.append(f"low_diversity: synthetic MS-SSIM diversity {div_fake:.3g} < {diversity_ratio} x "
                               f"real {div_real:.3g} (1 - mean pairwise MS-SSIM)")
    return {"collapsed": bool(reasons), "reasons": reasons, "thresholds": thresholds, "checked": checked}

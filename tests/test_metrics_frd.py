"""FRD is optional: without frd-score the metric fails with the install steps; with it, it separates sets."""
from __future__ import annotations

import builtins

import pytest
import torch

from medsynbench.metrics import compute_image_metrics
from medsynbench.metrics.frd import INSTALL_STEPS


def test_missing_frd_score_names_the_install_steps(monkeypatch):
    real_import = builtins.__import__

    def no_frd(name, *args, **kwargs):
        if name == "frd_score":
            raise ImportError("No module named 'frd_score'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_frd)
    x = torch.zeros(4, 1, 16, 16)
    with pytest.raises(ImportError, match="no-build-isolation pyradiomics") as err:
        compute_image_metrics(x, x, names=["frd"])
    assert INSTALL_STEPS in str(err.value)


def test_frd_orders_similar_and_different_sets():
    pytest.importorskip("frd_score", reason="optional frd-score not installed (see metrics/frd.py for the steps)")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    stripes = lambda n, f: ((xx / f).sin() * 0.6 + 0.1 * torch.randn(n, 1, 32, 32, generator=g)).clamp(-1, 1)
    real, close, far = stripes(10, 3.0), stripes(10, 3.0), (torch.rand(10, 1, 32, 32, generator=g) * 2 - 1)
    (near_rec,) = compute_image_metrics(real, close, names=["frd"])
    (far_rec,) = compute_image_metrics(real, far, names=["frd"])
    assert near_rec["value"] < far_rec["value"]
    assert far_rec["implementation_frd"].startswith("frd-score")

"""Delentropy against the pinned reference values (every variant), and the image-space metrics' behaviour."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynbench.metrics import compute_image_metrics
from medsynbench.metrics.delentropy import delentropy, to_gray_integers
from medsynbench.metrics.image_metrics import mean_pairwise_msssim
from medsynbench.metrics.memorisation import closest_pairs_grid, memorisation_ratios

REFS = Path(__file__).resolve().parents[1].parent / "shared" / "metric-refs"


def _reference_images():
    import skimage
    import skimage.data as data
    return {"camera": data.camera(), "coins": data.coins(), "moon": data.moon(),
            "constant_512x512_value128_uint8": np.full((512, 512), 128, np.uint8),
            "uniform_noise_512x512_uint8_default_rng0":
                np.random.default_rng(0).integers(0, 256, size=(512, 512), dtype=np.uint8),
            "camera_as_float_0_1": skimage.img_as_float(data.camera())}


@pytest.fixture(scope="module")
def del_refs():
    path = REFS / "delentropy.json"
    if not path.is_file():
        pytest.skip(f"delentropy reference values not available: {path} is absent")
    return json.loads(path.read_text())


def test_delentropy_all_variants_match_reference(del_refs):
    images = _reference_images()
    for name, img in images.items():
        ref = del_refs["images"][name]
        assert delentropy(img, "central_unit_bins") == pytest.approx(ref["delentropy_bits"], abs=1e-12), name
        assert delentropy(img, "central_255_bins_autorange") == pytest.approx(ref["variant_autorange_255bins"],
                                                                              abs=1e-12), name
    for name, value in del_refs["diagonal_2x2_unit_bins_values_bits"].items():
        img = images["uniform_noise_512x512_uint8_default_rng0" if name.startswith("uniform") else name]
        assert delentropy(img, "diagonal_2x2_unit_bins") == pytest.approx(value, abs=1e-12), name


def test_delentropy_rejects_bad_input():
    with pytest.raises(ValueError, match="variant"):
        delentropy(np.zeros((8, 8), np.uint8), "sobel")
    with pytest.raises(ValueError, match="2-D"):
        delentropy(np.zeros((3, 8, 8), np.uint8))


def test_gray_conversion_and_set_metrics():
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).repeat(20, 1, 32, 1)
    noisy = torch.rand((20, 1, 32, 32), generator=g) * 2 - 1
    ints = to_gray_integers(smooth)
    assert ints.dtype == np.uint8 and ints.min() == 0 and ints.max() == 255
    rgb = to_gray_integers(smooth.repeat(1, 3, 1, 1))
    assert np.abs(rgb.astype(int) - ints.astype(int)).max() <= 1
    same = {r["metric"]: r for r in compute_image_metrics(noisy, noisy.flip(0), names=["delentropy"])}
    diff = {r["metric"]: r for r in compute_image_metrics(noisy, smooth, names=["delentropy"])}
    assert same["delentropy_w1"]["value"] == pytest.approx(0, abs=1e-12)
    assert diff["delentropy_w1"]["value"] > 1 and diff["delentropy_ks"]["value"] == 1.0
    dist = json.loads(diff["delentropy_w1"]["real_distribution"])
    assert {"mean", "std", "q05", "q50", "q95", "hist_counts"} <= set(dist) and sum(dist["hist_counts"]) == 20
    assert diff["delentropy_w1"]["variant"] == "central_unit_bins"


def test_memorisation_detects_copies():
    g = torch.Generator().manual_seed(1)
    train = torch.rand((30, 1, 16, 16), generator=g) * 2 - 1
    copies = (train[:10] + 0.001 * torch.randn((10, 1, 16, 16), generator=g)).clamp(-1, 1)
    novel = torch.rand((10, 1, 16, 16), generator=g) * 2 - 1
    info = memorisation_ratios(copies, train)
    assert (info["nearest_train"] == np.arange(10)).all() and (info["ratio"] < 0.05).all()
    recs = {r["metric"]: r for r in compute_image_metrics(train, torch.cat([copies, novel]), names=["memorisation"],
                                                          train_images=train)}
    assert recs["copied_fraction"]["value"] == pytest.approx(0.5)
    assert recs["authenticity"]["higher_is_better"] and not recs["copied_fraction"]["higher_is_better"]
    grid = closest_pairs_grid(torch.cat([novel, copies]), train, n=4)
    assert grid.shape == (8, 1, 16, 16)
    assert torch.allclose(grid[0], grid[1], atol=0.01)  # closest pair: a copy beside its training image
    with pytest.raises(ValueError, match="train_images"):
        compute_image_metrics(train, novel, names=["memorisation"])


def test_msssim_diversity_orders_collapsed_and_diverse_sets():
    g = torch.Generator().manual_seed(2)
    base = torch.rand((1, 1, 64, 64), generator=g) * 2 - 1
    collapsed = (base + 0.05 * torch.randn((12, 1, 64, 64), generator=g)).clamp(-1, 1)
    diverse = torch.rand((12, 1, 64, 64), generator=g) * 2 - 1
    v_col, info = mean_pairwise_msssim(collapsed, 30, seed=0)
    v_div, _ = mean_pairwise_msssim(diverse, 30, seed=0)
    assert v_col > 0.5 > v_div and info["scales"] == 3
    recs = {r["metric"]: r for r in compute_image_metrics(diverse, collapsed, names=["msssim"], msssim_pairs=30)}
    assert recs["msssim_fake"]["value"] == pytest.approx(v_col)
    assert recs["msssim_gap"]["value"] == pytest.approx(v_col - recs["msssim_gap"]["real_value"])

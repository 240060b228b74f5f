"""Each GAN family learns: after N training steps (library API: ``benchmark.train_loop.train``) the Fréchet distance
of its samples to the real training images is clearly below that of the same model at step 0.

Data: the embedded ISIC 2018 mini set at 32 px (160 real training image-mask pairs). Fréchet distances are taken
in two feature spaces that are never trained on the fakes (nor on anything): a seeded random-init CNN
(``metrics``' ``random_cnn`` extractor, 64-d) and pixels average-pooled to 4x4 (48-d). Sizes and step counts are
measured to fit CI on a 2-core CPU (about 1.5 min in all on one thread); the measured ratios are far below the bound.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medsynbench.benchmark.data import load_dataset
from medsynbench.benchmark.train_loop import build_gan, train
from medsynbench.benchmark.utils import seed_everything
from medsynbench.gans import draw_train_masks
from medsynbench.metrics import frechet_distance, get_extractor
from tests.conftest import SMOKE, compose_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RATIO = 0.7  # FD after training must be at most this fraction of FD at step 0
BASE = [o for o in SMOKE if "filters" not in o] + ["train.batch_size=32", "train.ema_decay=0.9"]
# family: (conf/gan name, steps, overrides). Measured FD ratios (random_cnn / pixels 4x4) noted per family.
FAMILIES = {
    "dcgan": ("dcgan", 400, ["gan.g_filters=16", "gan.d_filters=16"]),                          # ~0.40 / 0.41
    "wgan_gp": ("wgan_gp", 200, ["gan.g_filters=16", "gan.d_filters=16"]),                      # ~0.46 / 0.45
    "spade": ("spade", 50, ["gan.g_filters=16", "gan.d_filters=16", "gan.spade_hidden=16",
                            "gan.latent_dim=64", "gan.d_layers=3"]),                            # ~0.36 / 0.25
    "stylegan2": ("stylegan2", 100, ["gan.channel_base=512", "gan.channel_max=32", "train.lr_g=0.002",
                                     "train.lr_d=0.002", "train.betas=[0,0.99]"]),               # ~0.27 / 0.34
}


def _features(images: torch.Tensor) -> dict:
    extractor = get_extractor("random_cnn", feature_dim=64, seed=0)
    return {"random_cnn": extractor.features(images, progress=False),
            "pixels_4x4": F.adaptive_avg_pool2d(images.float(), 4).flatten(1).numpy()}


def _fd(gan, bundle, real: dict) -> dict:
    n = len(bundle.train)
    masks = draw_train_masks(bundle.train.masks, n, seed=7) if gan.takes_masks else None
    fake = _features(gan.sample(n, seed=7, masks=masks, batch_size=n)["images"])
    return {name: float(frechet_distance(real[name], fake[name])) for name in real}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gan_family_learns(family, tmp_path):
    name, steps, overrides = FAMILIES[family]
    cfg = compose_config([*BASE, f"gan={name}", f"train.steps={steps}", f"train.checkpoint_every={steps}",
                          f"train.sample_every={steps}", f"paths.results_dir={tmp_path}", *overrides])
    bundle = load_dataset(cfg.dataset, cfg.data)
    real = _features(bundle.train.images)
    device = torch.device("cpu")

    seed_everything(cfg.seed)  # the same initial model as the run's (train() seeds and builds the same way)
    before = _fd(build_gan(cfg, bundle, device), bundle, real)
    result = train(cfg, bundle, tmp_path / "run", device)
    assert result.status == "completed" and result.steps_done == steps
    after = _fd(result.gan, bundle, real)
    ratios = {k: after[k] / before[k] for k in before}
    print(f"{family}: FD at step 0 {before}, after {steps} steps {after}, ratio {ratios}")
    for space, ratio in ratios.items():
        assert ratio <= RATIO, f"{family} did not learn in {space} space: FD {before[space]:.3f} -> {after[space]:.3f}"

"""StyleGAN2-ADA's adaptive augmentation, as wired into training (gans/augment.py ADA, gans/stylegan2.py).

Guards against the bugs that make ADA's augmentations "leak" into the generator's output: p following a rule other
than the ADA paper's (Karras et al. 2020, sec. 3: p += sign(r_t - target) * N / (ada_kimg * 1000) every
``ada_interval`` minibatches, N = images seen since the last update, r_t = E[sign(D(real))]), reals and fakes seen
through different pipelines or probabilities, and samples passing through the augmentation.
"""
from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from medsynbench.gans.augment import ADA

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SIZE = 16
TINY = ("gan.channel_base=128", "gan.channel_max=8", "gan.latent_dim=8", "gan.w_dim=8", "gan.mapping_layers=1",
        "gan.r1_interval=2", "gan.pl_interval=2")

pytestmark = pytest.mark.usefixtures("one_thread")


def gan_config(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(overrides=[f"+gan={name}", *overrides]).gan


def build(*overrides: str, name: str = "stylegan2"):
    torch.manual_seed(0)
    return hydra.utils.instantiate(gan_config(name, *TINY, *overrides), image_size=SIZE, image_channels=3,
                                   num_mask_classes=2, num_classes=0, _convert_="all")


def batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n, SIZE, SIZE, generator=g) > 0.5).long()
    return {"images": torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1, "masks": masks}


def ada_rule(p0: float, signs_per_update: list[np.ndarray], images: int, kimg: float, target: float = 0.6,
             p_max: float = 1.0) -> list[float]:
    """The ADA paper's update, written independently in numpy (float64, np.sign: r_t == target leaves p alone)."""
    p, out = p0, []
    for s in signs_per_update:
        r_t = float(np.mean(np.sign(s)))
        p = float(np.clip(p + np.sign(r_t - target) * images / (kimg * 1000), 0.0, p_max))
        out.append(p)
    return out


def test_p_trajectory_for_known_d_outputs_equals_the_ada_rule():
    rng = np.random.default_rng(0)
    # 80 logits per update, n_pos of them positive: r_t = (2 * n_pos - 80) / 80. 80 -> r_t = 1, 72 -> 0.8,
    # 64 -> 0.6 (exactly the target), 60 -> 0.5, 40 -> 0, 0 -> -1; runs long enough to hit both clamps.
    n_pos_seq = [80] * 30 + [64] * 5 + [72] * 3 + [0] * 40 + [72] * 10 + [60] * 3 + [64] * 4 + [40] * 3
    logits = []
    for i, n_pos in enumerate(n_pos_seq):
        x = np.concatenate([rng.uniform(0.1, 5, n_pos), -rng.uniform(0.1, 5, 80 - n_pos)])
        if i % 7 == 0:
            x[rng.integers(0, 80)] = 0.0        # a logit of exactly 0 counts 0, as torch.sign and np.sign say
        logits.append(rng.permutation(x))
    ada = ADA(image_channels=3, target=0.6, speed_kimg=2.0, p_init=0.0, p_max=0.9)
    got = []
    for x in logits:
        # accumulated in two calls, as train_step does once per minibatch
        ada.accumulate(torch.tensor(x[:40], dtype=torch.float32))
        ada.accumulate(torch.tensor(x[40:], dtype=torch.float32))
        ada.update(images_seen=80)
        got.append(float(ada.p))
    want = ada_rule(0.0, logits, images=80, kimg=2.0, p_max=0.9)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert max(want) == pytest.approx(0.9) and min(want[40:78]) == 0.0   # both clamps were exercised


def test_r_t_equal_to_the_target_leaves_p_unchanged():
    ada = ADA(image_channels=3, target=0.6, speed_kimg=1.0, p_init=0.3)
    ada.accumulate(torch.tensor([1.0] * 4 + [-1.0]))          # r_t = 3/5 = 0.6 exactly
    assert ada.update(images_seen=100) == pytest.approx(0.6)
    assert float(ada.p) == pytest.approx(0.3)


def test_train_step_updates_p_every_interval_with_the_images_seen_since_the_last_update():
    gan = build("gan.ada_interval=3", "gan.ada_kimg=0.4", "gan.ada_p_init=0.5")
    opts = gan.configure_optimizers(lr_g=2e-3, lr_d=2e-3, betas=(0.0, 0.99))
    b, step_p = 8, 8 * 3 / 400
    p, trajectory = 0.5, []
    for step in range(9):
        out = gan.train_step(batch(b, seed=step), opts, step)
        if (step + 1) % 3 == 0:
            assert "ada_rt" in out and -1 <= out["ada_rt"] <= 1
            p = min(1.0, max(0.0, p + float(np.sign(out["ada_rt"] - 0.6)) * step_p))
        else:
            assert "ada_rt" not in out
        trajectory.append(out["ada_p"])
        assert out["ada_p"] == pytest.approx(p, abs=1e-6), (step, trajectory)
    assert len(set(round(v, 6) for v in trajectory)) > 1   # p did move


class _Recorder:
    """Forward hooks on the ADA module and on D: what goes in and out, and ADA's p at each call."""

    def __init__(self, gan):
        self.ada_calls, self.d_inputs = [], []
        self.handles = [
            gan.ada.register_forward_hook(lambda m, args, out: self.ada_calls.append(
                (args[0].detach().clone(), out.detach().clone(), float(m.p)))),
            gan.discriminator.register_forward_hook(lambda m, args, out: self.d_inputs.append(
                args[0].detach().clone()))]

    def close(self):
        for h in self.handles:
            h.remove()


def test_real_and_fake_go_through_the_same_pipeline_at_the_same_p():
    gan = build("gan.ada_interval=100", "gan.ada_p_init=0.7", "gan.r1_interval=100", "gan.pl_interval=100")
    opts = gan.configure_optimizers(lr_g=2e-3, lr_d=2e-3, betas=(0.0, 0.99))
    data = batch(8, seed=1)
    rec = _Recorder(gan)
    gan.train_step(data, opts, step=1)
    rec.close()
    # G step: D(ADA(fake)); D step: D(ADA(real)), D(ADA(fake)) -- every D input is an ADA output.
    assert len(rec.ada_calls) == 3 and len(rec.d_inputs) == 3
    assert [p for *_, p in rec.ada_calls] == pytest.approx([0.7] * 3)
    for (_, aug, _), d_in in zip(rec.ada_calls, rec.d_inputs):
        assert torch.equal(aug, d_in)
    real_in = rec.ada_calls[1][0]
    assert torch.equal(real_in, gan.real_pairs(data))
    # at p = 0.7 most samples are transformed, reals and fakes alike
    for x_in, x_out, _ in rec.ada_calls:
        changed = (x_in - x_out).flatten(1).abs().amax(1) > 1e-4
        assert changed.float().mean() >= 0.5


def test_samples_never_pass_through_the_augmentation():
    gan = build("gan.ada_p_init=0.0")
    opts = gan.configure_optimizers(lr_g=2e-3, lr_d=2e-3, betas=(0.0, 0.99))
    gan.train_step(batch(8), opts, step=1)
    gan.update_ema(0.5)
    calls = []
    handle = gan.ada.register_forward_hook(lambda *a: calls.append(1))
    before = {ema: gan.sample(6, seed=3, ema=ema) for ema in (True, False)}
    gan.ada.p.fill_(1.0)
    after = {ema: gan.sample(6, seed=3, ema=ema) for ema in (True, False)}
    handle.remove()
    assert not calls
    for ema in (True, False):
        assert torch.equal(before[ema]["images"], after[ema]["images"])
        assert torch.equal(before[ema]["masks"], after[ema]["masks"])


def test_ada_p_max_caps_p_during_training_and_is_checked():
    # target below any r_t: p rises 0.8 per step (8 images / 10), far past the cap without it
    gan = build("gan.ada_interval=1", "gan.ada_kimg=0.01", "gan.ada_target=-1.5", "+gan.ada_p_max=0.3")
    opts = gan.configure_optimizers(lr_g=2e-3, lr_d=2e-3, betas=(0.0, 0.99))
    ps = [gan.train_step(batch(8, seed=s), opts, s)["ada_p"] for s in range(4)]
    assert ps == pytest.approx([0.3] * 4) and gan.model_args()["ada_p_max"] == 0.3
    assert gan_config("stylegan2_full").get("ada_p_max", 1.0) == 1.0     # the paper-scale preset is uncapped
    with pytest.raises(Exception, match="ada_p_max"):
        build("gan.ada_p_init=0.5", "+gan.ada_p_max=0.3")

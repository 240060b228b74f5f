"""Shared contract of every GAN in the zoo: one base test class, subclassed per architecture x loss.

Each subclass only says how to build its model (through the real Hydra config in conf/gan/) and what data it needs;
the inherited tests check forward/backward, finite losses, shapes and range, the EMA update, the checkpoint round
trip through model_args + state_dict, and seeded determinism.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from medsynbench.gans import GAN, build_from_args

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def gan_config(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(overrides=[f"+gan={name}", *overrides]).gan


def build(name: str, *overrides: str, image_channels=1, num_mask_classes=2, num_classes=0, size=SIZE) -> GAN:
    return hydra.utils.instantiate(gan_config(name, *overrides), image_size=size, image_channels=image_channels,
                                   num_mask_classes=num_mask_classes, num_classes=num_classes, _convert_="all")


def tiny_batch(n=8, channels=1, num_mask_classes=2, num_classes=0, size=SIZE, seed=123) -> dict:
    """Blob images whose mask is where the image is bright: a learnable, aligned image-mask pair."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = torch.randint(8, size - 8, (2, n, 1, 1), generator=g)
    r = torch.randint(4, 8, (n, 1, 1), generator=g)
    masks = (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).long()
    images = (masks.float() * 1.6 - 0.8 + 0.1 * torch.randn(n, size, size, generator=g)).clamp(-1, 1)
    batch = {"images": images.unsqueeze(1).expand(-1, channels, -1, -1).contiguous()}
    if num_mask_classes:
        batch["masks"] = masks.clamp(max=num_mask_classes - 1)
    if num_classes:
        batch["labels"] = torch.arange(n) % num_classes
    return batch


class GANContract:
    """Subclasses set ``config`` (conf/gan name), ``overrides`` and the data layout."""

    config = "dcgan"
    overrides: tuple[str, ...] = ("gan.g_filters=8", "gan.d_filters=8")
    image_channels = 1
    num_mask_classes = 2
    num_classes = 0
    makes_masks = True       # samples include masks (joint pairs or mask-conditioned)
    steps = 3

    def make(self, *extra) -> GAN:
        return build(self.config, *self.overrides, *extra, image_channels=self.image_channels,
                     num_mask_classes=self.num_mask_classes, num_classes=self.num_classes)

    def batch(self, seed=123):
        return tiny_batch(channels=self.image_channels, num_mask_classes=self.num_mask_classes,
                          num_classes=self.num_classes, seed=seed)

    def train(self, gan, steps=None, seed=123):
        opts = gan.configure_optimizers(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999))
        losses = {}
        for step in range(steps or self.steps):
            losses = gan.train_step(self.batch(seed + step), opts, step)
            gan.update_ema(0.9)
        return losses

    # --- the contract ------------------------------------------------------------------------------------------
    def test_config_builds_the_model_with_its_name(self):
        torch.manual_seed(0)
        gan = self.make()
        assert isinstance(gan, GAN) and gan.name == gan_config(self.config).name
        assert not any(p.requires_grad for p in gan.g_ema.parameters())

    def test_train_step_updates_both_networks_with_finite_losses(self):
        torch.manual_seed(0)
        gan = self.make()
        g0 = [p.detach().clone() for p in gan.generator.parameters()]
        d0 = [p.detach().clone() for p in gan.discriminator.parameters()]
        losses = self.train(gan)
        assert {"loss_d", "loss_g"} <= set(losses)
        assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
        changed_g = sum(not torch.equal(a, b) for a, b in zip(g0, gan.generator.parameters()))
        changed_d = sum(not torch.equal(a, b) for a, b in zip(d0, gan.discriminator.parameters()))
        # Most tensors move (a few, e.g. StyleGAN's noise strengths, may legitimately start at a zero gradient).
        assert changed_g >= 0.8 * len(g0) and changed_d >= 0.8 * len(d0), (changed_g, len(g0), changed_d, len(d0))

    def test_samples_have_the_right_shapes_range_and_types(self):
        torch.manual_seed(0)
        gan = self.make()
        self.train(gan, steps=1)
        out = gan.sample(5, seed=3, batch_size=2)
        img = out["images"]
        assert img.shape == (5, self.image_channels, SIZE, SIZE) and img.dtype == torch.float32
        assert img.device.type == "cpu" and img.min() >= -1 and img.max() <= 1 and img.std() > 0
        if self.makes_masks:
            assert out["masks"].shape == (5, SIZE, SIZE) and out["masks"].dtype == torch.int64
            assert 0 <= out["masks"].min() and out["masks"].max() < self.num_mask_classes
        else:
            assert "masks" not in out
        if self.num_classes:
            assert out["labels"].shape == (5,)

    def test_sampling_is_seeded_and_independent_of_batch_size(self):
        torch.manual_seed(0)
        gan = self.make()
        self.train(gan, steps=1)
        a = gan.sample(6, seed=11, batch_size=6)
        b = gan.sample(6, seed=11, batch_size=4)
        c = gan.sample(6, seed=12, batch_size=6)
        torch.testing.assert_close(a["images"], b["images"], atol=1e-5, rtol=0)
        assert (a["images"] - c["images"]).abs().max() > 1e-3

    def test_update_ema_is_a_lerp_and_copies_buffers(self):
        torch.manual_seed(0)
        gan = self.make()
        gan.update_ema(0.0)
        self.train(gan, steps=1)
        before = [p.clone() for p in gan.g_ema.parameters()]
        gan.update_ema(0.75)
        for e0, e1, p in zip(before, gan.g_ema.parameters(), gan.generator.parameters()):
            torch.testing.assert_close(e1, 0.75 * e0 + 0.25 * p.detach())
        for b_ema, b in zip(gan.g_ema.buffers(), gan.generator.buffers()):
            assert torch.equal(b_ema, b)

    def test_checkpoint_round_trip_via_model_args_and_state_dict(self, tmp_path):
        torch.manual_seed(0)
        gan = self.make()
        self.train(gan, steps=2)
        args = gan.model_args()
        json.dumps(args)  # plain values only: no pickled modules
        path = tmp_path / "ckpt.pt"
        torch.save({"model_args": args, "state_dict": gan.state_dict()}, path)
        ckpt = torch.load(path, weights_only=True)
        torch.manual_seed(999)  # a different init: everything must come from the state dict
        rebuilt = build_from_args(ckpt["model_args"])
        rebuilt.load_state_dict(ckpt["state_dict"])
        assert type(rebuilt) is type(gan)
        for ema in (True, False):
            a, b = gan.sample(4, seed=5, ema=ema), rebuilt.sample(4, seed=5, ema=ema)
            assert torch.equal(a["images"], b["images"])

    def test_same_seed_gives_identical_weights_after_k_steps(self):
        def run(seed):
            torch.manual_seed(seed)
            gan = self.make()
            self.train(gan, steps=2)
            return gan.state_dict()
        a, b, c = run(0), run(0), run(1)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --- the shared backbone with each loss, image + mask pairs ---------------------------------------------------------
class TestDCGAN(GANContract):
    config = "dcgan"


class TestLSGAN(GANContract):
    config = "lsgan"


class TestWGAN(GANContract):
    config = "wgan"
    overrides = ("gan.g_filters=8", "gan.d_filters=8", "gan.n_critic=2")


class TestWGANGP(GANContract):
    config = "wgan_gp"
    overrides = ("gan.g_filters=8", "gan.d_filters=8", "gan.n_critic=2")


class TestHinge(GANContract):
    config = "hinge"


class TestDCGANRGBNoMasks(GANContract):
    """RGB images without masks, every Table 1 option flipped away from its default."""
    image_channels = 3
    num_mask_classes = 0
    makes_masks = False
    overrides = ("gan.g_filters=8", "gan.d_filters=8", "gan.diffaugment=true", "gan.data_augmentation=true",
                 "gan.g_norm=instance", "gan.d_norm=instance", "gan.g_activation=selu", "gan.d_activation=elu",
                 "gan.g_spectral_norm=true", "gan.d_spectral_norm=true", "gan.init=xavier", "gan.init_gain=1.0",
                 "gan.fm_weight=1.0", "gan.label_smoothing=0.1")


class TestConditionalGAN(GANContract):
    config = "cgan"
    num_mask_classes = 0
    num_classes = 3
    makes_masks = False


class TestSPADE(GANContract):
    config = "spade"
    num_mask_classes = 3
    overrides = ("gan.g_filters=8", "gan.d_filters=8", "gan.spade_hidden=8", "gan.latent_dim=16", "gan.d_layers=3")

    def test_sample_uses_given_masks(self):
        torch.manual_seed(0)
        gan = self.make()
        masks = self.batch()["masks"][:4]
        out = gan.sample(4, seed=1, masks=masks)
        assert torch.equal(out["masks"], masks)
        other = gan.sample(4, seed=1, masks=torch.zeros_like(masks))
        assert not torch.allclose(out["images"], other["images"])  # the image follows the mask

    def test_without_masks_and_before_training_it_says_what_to_do(self):
        torch.manual_seed(0)
        with pytest.raises(ValueError, match="pass masks="):
            self.make().sample(2, seed=0)
        with pytest.raises(Exception, match="needs a dataset with masks"):  # Hydra wraps the ValueError
            build("spade", num_mask_classes=0)


class TestStyleGAN2(GANContract):
    config = "stylegan2"
    overrides = ("gan.channel_base=256", "gan.channel_max=16", "gan.latent_dim=16", "gan.w_dim=16",
                 "gan.r1_interval=2", "gan.pl_interval=2", "gan.ada_interval=1", "gan.ada_p_init=0.2")


class TestStyleGAN2Conditional(TestStyleGAN2):
    config = "stylegan2_cond"
    num_mask_classes = 0
    num_classes = 3
    makes_masks = False


def test_unconditional_model_rejects_labels_and_masks():
    torch.manual_seed(0)
    gan = build("dcgan", "gan.g_filters=8", "gan.d_filters=8")
    with pytest.raises(ValueError, match="unconditional"):
        gan.sample(2, seed=0, labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="does not take masks"):
        gan.sample(2, seed=0, masks=torch.zeros(2, SIZE, SIZE, dtype=torch.long))


def test_conditional_model_needs_labels_and_follows_them():
    torch.manual_seed(0)
    with pytest.raises(Exception, match="class labels"):  # Hydra wraps the ValueError
        build("cgan", num_mask_classes=0, num_classes=0)
    gan = build("cgan", "gan.g_filters=8", "gan.d_filters=8", num_mask_classes=0, num_classes=3)
    a = gan.sample(4, seed=0, labels=torch.zeros(4, dtype=torch.long))
    b = gan.sample(4, seed=0, labels=torch.full((4,), 2))
    assert torch.equal(a["labels"], torch.zeros(4, dtype=torch.long))
    assert not torch.allclose(a["images"], b["images"])


def test_build_from_args_rejects_unknown_targets():
    for target in ("medsynbench.gans.nope.Missing", "torch.nn.Linear", "os.system", "medsynbench.gans.base.GAN"):
        with pytest.raises(ValueError, match="not a registered GAN class"):
            build_from_args({"_target_": target})


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_dcgan_backbone_any_power_of_two_resolution_and_channels(size):
    torch.manual_seed(0)
    gan = build("dcgan", "gan.g_filters=4", "gan.d_filters=4", image_channels=3, num_mask_classes=4, size=size)
    x = gan.generator(torch.randn(2, gan.latent_dim))
    assert x.shape == (2, 7, size, size)
    assert gan.discriminator(x).shape == (2,)
    with pytest.raises(Exception, match="power of two"):
        build("dcgan", image_channels=1, num_mask_classes=0, size=48)

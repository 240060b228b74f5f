"""Each Table 1 hyperparameter of the empirical study is a config key that changes the built model or the
training (one test per key), and conf/sweep/ expands exactly the Table 1 grid."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch.nn.utils import parametrize

from medsynbench.gans.dcgan import DCGAN
from medsynbench.gans.perceptual import MissingWeightsError
from tests.test_gans_base import CONF, build, tiny_batch

SWEEPS = Path(CONF) / "sweep"


pytestmark = pytest.mark.usefixtures("one_thread")


def small(*overrides, **kw):
    torch.manual_seed(0)
    return build("dcgan", "gan.g_filters=8", "gan.d_filters=8", *overrides, **kw)


def d_after_one_step(*overrides, lr=2e-4, config="dcgan"):
    """Discriminator + generator weights after one seeded step: equal inputs, so any difference is the key's."""
    torch.manual_seed(0)
    gan = build(config, "gan.g_filters=8", "gan.d_filters=8", *overrides)
    opts = gan.configure_optimizers(lr_g=lr, lr_d=lr, betas=(0.5, 0.999))
    torch.manual_seed(1)
    losses = gan.train_step(tiny_batch(), opts, 0)
    return torch.cat([p.detach().flatten() for p in gan.parameters()]), losses


def assert_training_changes(*overrides, config="dcgan"):
    base, _ = d_after_one_step(config=config)
    other, losses = d_after_one_step(*overrides, config=config)
    assert base.shape == other.shape and not torch.equal(base, other)
    return losses


def count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


def test_diffaugment_key_augments_what_d_sees():
    gan = small("gan.diffaugment=true", "gan.diffaugment_policy=translation")
    assert gan.diffaugment is not None and gan.diffaugment.ops == ["translation"]
    assert small().diffaugment is None
    assert_training_changes("gan.diffaugment=true")


@pytest.mark.parametrize("net", ["g", "d"])
@pytest.mark.parametrize("name,kind", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("elu", nn.ELU),
                                       ("selu", nn.SELU)])
def test_activation_keys(net, name, kind):
    gan = small(f"gan.{net}_activation={name}")
    module = gan.generator if net == "g" else gan.discriminator
    acts = [m for m in module.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU))]
    assert acts and all(type(m) is kind for m in acts)


@pytest.mark.parametrize("net", ["g", "d"])
def test_norm_keys(net):
    module = lambda gan: gan.generator if net == "g" else gan.discriminator  # noqa: E731
    bn, inorm, none = (module(small(f"gan.{net}_norm={n}")) for n in ("batch", "instance", "none"))
    assert count(bn, nn.BatchNorm2d) > 0 and count(bn, nn.InstanceNorm2d) == 0
    assert count(inorm, nn.InstanceNorm2d) == count(bn, nn.BatchNorm2d) and count(inorm, nn.BatchNorm2d) == 0
    assert count(none, nn.BatchNorm2d) == count(none, nn.InstanceNorm2d) == 0


@pytest.mark.parametrize("net", ["g", "d"])
def test_filter_keys(net):
    widths = {}
    for f in (16, 32):
        torch.manual_seed(0)
        gan = build("dcgan", f"gan.{net}_filters={f}")
        module = gan.generator if net == "g" else gan.discriminator
        convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        widths[f] = [c.out_channels for c in convs[:-1]]  # last conv: fixed output width
    assert widths[32] == [2 * w for w in widths[16]]


@pytest.mark.parametrize("net", ["g", "d"])
def test_spectral_norm_keys(net):
    def convs(gan):
        module = gan.generator if net == "g" else gan.discriminator
        return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(parametrize.is_parametrized(c, "weight") for c in convs(small(f"gan.{net}_spectral_norm=true")))
    assert not any(parametrize.is_parametrized(c, "weight") for c in convs(small()))
    assert_training_changes(f"gan.{net}_spectral_norm=true")


def _conv_weights(gan):
    return torch.cat([m.weight.detach().flatten() for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d)])


def test_init_key_selects_the_scheme():
    w_normal = _conv_weights(small("gan.init=normal", "gan.init_gain=0.02"))
    assert w_normal.std().item() == pytest.approx(0.02, rel=0.1)
    w_uniform = _conv_weights(small("gan.init=xavier_uniform", "gan.init_gain=1.0"))
    w_xavier = _conv_weights(small("gan.init=xavier", "gan.init_gain=1.0"))
    w_kaiming = _conv_weights(small("gan.init=kaiming", "gan.init_gain=1.0"))
    first = small("gan.init=xavier_uniform", "gan.init_gain=1.0").discriminator.blocks[0][0].weight
    fan_in, fan_out = first.shape[1] * 16, first.shape[0] * 16
    assert first.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-6    # uniform bound of Glorot
    assert len({round(w.std().item(), 4) for w in (w_uniform, w_xavier, w_kaiming)}) == 3


def test_init_gain_key_scales_the_weights():
    for scheme in ("normal", "xavier", "kaiming"):
        lo = _conv_weights(small(f"gan.init={scheme}", "gan.init_gain=0.01")).std()
        hi = _conv_weights(small(f"gan.init={scheme}", "gan.init_gain=1.0")).std()
        assert (hi / lo).item() == pytest.approx(100, rel=0.1), scheme


def test_gp_weight_key_adds_the_penalty():
    off, off_losses = d_after_one_step("gan.gp_weight=0.0", config="wgan_gp")
    on, losses = d_after_one_step("gan.gp_weight=10.0", config="wgan_gp")
    assert "gp" not in off_losses and losses["gp"] > 0 and not torch.equal(off, on)


def test_clip_value_key_bounds_critic_weights():
    torch.manual_seed(0)
    gan = build("wgan", "gan.g_filters=8", "gan.d_filters=8", "gan.clip_value=0.01", "gan.n_critic=1")
    opts = gan.configure_optimizers(lr_g=0.1, lr_d=0.1, betas=(0.5, 0.999))
    gan.train_step(tiny_batch(), opts, 0)
    assert max(p.abs().max().item() for p in gan.discriminator.parameters()) <= 0.01 + 1e-7
    torch.manual_seed(0)
    loose = build("wgan", "gan.g_filters=8", "gan.d_filters=8", "gan.clip_value=0.0", "gan.n_critic=1")
    opts = loose.configure_optimizers(lr_g=0.1, lr_d=0.1, betas=(0.5, 0.999))
    loose.train_step(tiny_batch(), opts, 0)
    assert max(p.abs().max().item() for p in loose.discriminator.parameters()) > 0.01


def test_fm_weight_key_adds_feature_matching():
    losses = assert_training_changes("gan.fm_weight=10.0")
    assert losses["fm"] > 0
    assert losses["loss_g"] == pytest.approx(losses["loss_g_adv"] + 10.0 * losses["fm"], rel=1e-5)


def test_vgg_weight_key_needs_real_weights_and_adds_the_loss(tmp_path):
    with pytest.raises(Exception, match="needs ImageNet-pretrained VGG19"):
        small("gan.vgg_weight=1.0")
    with pytest.raises(Exception, match="not found"):
        small("gan.vgg_weight=1.0", f"gan.vgg_weights={tmp_path / 'missing.pth'}")
    # Weights made here (random init) stand in for the ImageNet file the loader expects.
    from torchvision.models import vgg19
    torch.manual_seed(0)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg19().features.state_dict().items()}, path)
    losses = assert_training_changes("gan.vgg_weight=1.0", f"gan.vgg_weights={path}")
    assert losses["vgg"] > 0
    assert not any("vgg" in k for k in small("gan.vgg_weight=1.0", f"gan.vgg_weights={path}").state_dict())
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="not a torchvision VGG19"):
        DCGAN("d", 32, 1, vgg_weight=1.0, vgg_weights=str(bad))


def test_learning_rate_reaches_the_optimisers_and_the_update():
    gan = small()
    opts = gan.configure_optimizers(lr_g=1e-3, lr_d=4e-5, betas=(0.0, 0.99), optimizer="adam")
    assert opts["g"].param_groups[0]["lr"] == 1e-3 and opts["d"].param_groups[0]["lr"] == 4e-5
    assert opts["g"].param_groups[0]["betas"] == (0.0, 0.99)
    assert isinstance(gan.configure_optimizers(1e-4, 1e-4, (0.5, 0.9), "rmsprop")["d"], torch.optim.RMSprop)
    a, _ = d_after_one_step(lr=2e-4)
    b, _ = d_after_one_step(lr=1e-3)
    assert not torch.equal(a, b)


def test_label_smoothing_key_changes_the_real_target():
    assert small("gan.label_smoothing=0.1").loss.real_target == pytest.approx(0.9)
    assert small().loss.real_target == 1.0
    assert_training_changes("gan.label_smoothing=0.1")


def test_data_augmentation_key_flips_real_pairs():
    assert small("gan.data_augmentation=true").data_augmentation
    assert_training_changes("gan.data_augmentation=true")


def test_n_critic_key_sets_discriminator_updates_per_step():
    torch.manual_seed(0)
    gan = build("wgan_gp", "gan.g_filters=8", "gan.d_filters=8", "gan.n_critic=3")
    opts = gan.configure_optimizers(2e-4, 2e-4, (0.5, 0.999))
    gan.train_step(tiny_batch(), opts, 0)
    d_steps = next(iter(opts["d"].state.values()))["step"]
    g_steps = next(iter(opts["g"].state.values()))["step"]
    assert int(d_steps) == 3 and int(g_steps) == 1


# --- sweeps ---------------------------------------------------------------------------------------------------
TABLE1 = {
    "gan.diffaugment": 2, "gan.d_activation": 4, "gan.g_activation": 4, "gan.d_norm": 2, "gan.g_norm": 2,
    "gan.d_filters": 4, "gan.g_filters": 4, "gan.d_spectral_norm": 2, "gan.g_spectral_norm": 2, "gan.init": 4,
    "gan.init_gain": 4, "gan.fm_weight": 3, "gan.vgg_weight": 3, "train.lr_g": 5, "gan.data_augmentation": 2,
}
SPECIFIC = {"wgan_gp": {"gan.gp_weight": 4}, "wgan": {"gan.clip_value": 3},
            "dcgan": {"gan.label_smoothing": 2}, "lsgan": {"gan.label_smoothing": 2}, "hinge": {}}


def sweep_config(name: str, gan: str = "dcgan"):
    """The project's real top-level config with the sweep added, as ``--multirun +sweep=<name>`` composes it."""
    from medsynbench.benchmark.config import register_configs
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(config_name="config", overrides=[f"gan={gan}", f"+sweep={name}"], return_hydra_config=True)


@pytest.mark.parametrize("gan", sorted(SPECIFIC))
def test_table1_sweep_expands_exactly_the_grid(gan):
    cfg = sweep_config(f"table1_{gan}", gan)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params.pop("gan") == gan
    grid = {k: [v.strip() for v in str(val).split(",")] for k, val in params.items()}
    assert {k: len(v) for k, v in grid.items()} == {**TABLE1, **SPECIFIC[gan]}
    assert grid["train.lr_g"] == ["0.00004", "0.00005", "0.0001", "0.0002", "0.001"]
    assert grid["gan.init_gain"] == ["0.01", "0.02", "0.1", "1.0"]
    assert OmegaConf.is_interpolation(cfg.train, "lr_d")
    assert OmegaConf.merge(cfg, OmegaConf.from_dotlist(["train.lr_g=0.001"])).train.lr_d == 0.001
    # every gan.* key exists in that GAN's config, and one grid point builds a model
    gan_keys = set(sweep_config(f"table1_{gan}", gan).gan.keys())
    assert {k.split(".", 1)[1] for k in grid if k.startswith("gan.")} <= gan_keys
    point = [f"{k}={v[-1]}" for k, v in grid.items() if k.startswith("gan.") and k != "gan.vgg_weight"]
    torch.manual_seed(0)
    model = build(gan, *point, "gan.d_filters=16", "gan.g_filters=16")
    assert model.name == gan


def compose_train(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(overrides=[f"+train={name}"]).train


def test_cpu_small_sweep_is_small_and_uses_real_gan_configs():
    cfg = sweep_config("cpu_small")
    assert cfg.train.steps == compose_train("cpu_small").steps  # the sweep switches to the CPU training preset
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    sizes = [len(str(v).split(",")) for v in params.values()]
    assert math.prod(sizes) <= 40
    for g in params["gan"].split(","):
        assert (Path(CONF) / "gan" / f"{g}.yaml").is_file()
    combos = list(itertools.product(*(str(v).split(",") for v in params.values())))
    assert len(combos) == math.prod(sizes)

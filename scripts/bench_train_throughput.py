"""Training throughput of the DCGAN configuration through the framework (``gan.train_step`` + ``update_ema``, as
benchmark/train_loop.py drives it) against a minimal plain-PyTorch DCGAN loop of the same architecture, in one
process. Rounds alternate between the two so that load from other processes hits both alike; the median of the
rounds is reported. Target: ratio framework / plain >= 0.9.

    .venv/bin/python scripts/bench_train_throughput.py --image-size 64 --batch-size 32 --steps 20 --rounds 5
Writes results/benchmarks/train_throughput.md and .json.

With ``--per-config``: the cost per training step of every GAN config (conf/gan/*.yaml) at 32 and 64 px, as a
multiple of DCGAN's, so that slow configurations are visible before a sweep (README, "Cost per training step"):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_train_throughput.py --per-config --threads 1 --steps 3 --warmup 1
Writes results/benchmarks/train_step_cost.md and .json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medsynbench.gans.dcgan import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from medsynbench.gans.layers import init_weights  # noqa: E402


def framework_model(image_size: int, channels: int, device):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(overrides=["+gan=dcgan"]).gan
    gan = hydra.utils.instantiate(cfg, image_size=image_size, image_channels=channels, num_mask_classes=0,
                                  num_classes=0, _convert_="all").to(device)
    return gan, gan.configure_optimizers(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999)), cfg


def plain_loop(image_size: int, channels: int, latent: int, filters: int, device):
    """The textbook DCGAN step (PyTorch tutorial style): same G/D architecture and init, BCE, Adam."""
    G = DCGANGenerator(image_size, channels, latent, filters, "relu", "batch").to(device)
    D = DCGANDiscriminator(image_size, channels, filters, "leaky_relu", "batch").to(device)
    init_weights(G, "normal", 0.02)
    init_weights(D, "normal", 0.02)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(real):
        b = real.shape[0]
        fake = G(torch.randn(b, latent, device=device))
        opt_d.zero_grad()
        out_r, out_f = D(real), D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(out_r, torch.ones_like(out_r)) + \
            F.binary_cross_entropy_with_logits(out_f, torch.zeros_like(out_f))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        out = D(fake)
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        loss_g.backward()
        opt_g.step()
        return loss_d.item(), loss_g.item()
    return step


def full_loop(image_size: int, channels: int, batches, device):
    """The whole framework training loop (benchmark/train_loop.py: batch selection, train_step, EMA, progress bar,
    logging, and the checkpoint + sample grid it always writes at the last step) on the same images."""
    import tempfile

    from medsynbench.benchmark.config import register_configs
    from medsynbench.benchmark.data.types import DatasetBundle, ImageSet
    from medsynbench.benchmark.train_loop import train

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=[
            f"train.steps={len(batches)}", f"train.batch_size={batches[0].shape[0]}", "train.ema_decay=0.999",
            f"train.checkpoint_every={10 ** 6}", f"train.sample_every={10 ** 6}", "train.sample_grid=16",
            "train.progress=true", "train.log_every=10", "precision=32"])
    images = torch.cat(batches).cpu()
    bundle = DatasetBundle(name="bench", train=ImageSet(images=images), test=ImageSet(images=images[:8]))

    def run(_batches):
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, bundle, Path(tmp), device)
    return run


def timed(fn, batches, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        fn(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def gan_configs() -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / "gan").glob("*.yaml"))


def step_cost(name: str, image_size: int, batch_size: int, steps: int, warmup: int, device,
              budget_s: float = 30.0) -> dict:
    """Seconds per training step (``gan.train_step`` + ``update_ema``, as the training loop drives it) of the GAN
    config ``conf/gan/<name>.yaml`` on 3-channel image + binary-mask pairs with 3 classes (the ISIC layout; SPADE is
    conditioned on the masks, conditional GANs on the labels): the fastest of ``steps`` timed steps after ``warmup``
    (on a shared machine the minimum is the least disturbed estimate of a step's own cost). A config whose first step
    alone exceeds ``budget_s`` is reported by that step (``timed_steps: 0``), an upper bound."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(overrides=[f"+gan={name}"]).gan
    torch.manual_seed(0)
    classes = 3
    gan = hydra.utils.instantiate(cfg, image_size=image_size, image_channels=3, num_mask_classes=2,
                                  num_classes=classes if cfg.get("conditional", False) else 0,
                                  _convert_="all").to(device)
    opts = gan.configure_optimizers(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999))
    params = sum(p.numel() for p in gan.parameters())
    batch = {"images": torch.rand(batch_size, 3, image_size, image_size, device=device) * 2 - 1,
             "masks": (torch.rand(batch_size, image_size, image_size, device=device) > 0.5).long(),
             "labels": torch.randint(classes, (batch_size,), device=device)}

    def one(step: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gan.train_step(batch, opts, step)
        gan.update_ema(0.999)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = one(0)
    times = []
    if first <= budget_s:
        for step in range(1, warmup):
            one(step)
        start = time.perf_counter()
        for step in range(warmup, warmup + steps):
            times.append(one(step))
            if time.perf_counter() - start > budget_s:
                break
    return {"gan": name, "image_size": image_size, "batch_size": batch_size,
            "s_per_step": min(times) if times else first, "timed_steps": len(times), "step_times": times or [first],
            "parameters": params}


def per_config(args, device) -> dict:
    """The CPU cost per step of every GAN config at each image size (``--per-config``); writes
    ``results/benchmarks/train_step_cost.md`` and ``.json``."""
    sys.path.insert(0, str(REPO / "scripts"))
    from _bench import uptime, write_outputs

    rows = []
    for name in args.configs or gan_configs():
        for size in args.sizes:
            t0 = time.perf_counter()
            row = step_cost(name, size, args.batch_size, args.steps, args.warmup, device, args.budget)
            rows.append(row)
            print(f"{name:16s} {size:3d} px  {row['s_per_step'] * 1000:9.1f} ms/step  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    base = {r["image_size"]: r["s_per_step"] for r in rows if r["gan"] == "dcgan"}
    for r in rows:
        r["x_dcgan"] = r["s_per_step"] / base[r["image_size"]] if r["image_size"] in base else None
    setting = (f"batch {args.batch_size}, 3-channel images + binary masks (3 classes for conditional GANs), "
               f"fastest of {args.steps} steps after {args.warmup} warm-up, device {device}, "
               f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, {platform.machine()}")
    sizes = sorted({r["image_size"] for r in rows})
    lines = ["# Training cost per step of each GAN config", "", setting + ".", f"Load: {uptime()}", "",
             "| gan | " + " | ".join(f"{s} px: s/step (× dcgan)" for s in sizes) + " | parameters (64 px) |",
             "|---|" + "---|" * len(sizes) + "---|"]
    for name in dict.fromkeys(r["gan"] for r in rows):
        cells = []
        for s in sizes:
            r = next((r for r in rows if r["gan"] == name and r["image_size"] == s), None)
            mark = "" if r is None or r["timed_steps"] else "*"
            cells.append(f"{r['s_per_step']:.3f}{mark} ({r['x_dcgan']:.1f}×)" if r and r["x_dcgan"] else "–")
        params = next((r["parameters"] for r in rows if r["gan"] == name and r["image_size"] == max(sizes)), 0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {params / 1e6:.2f} M |")
    if any(not r["timed_steps"] for r in rows):
        lines += ["", f"\\* first step alone took more than {args.budget:.0f} s: that step (warm-up included) is "
                  "reported, an upper bound."]
    result = {"setting": setting, "rows": rows}
    write_outputs(Path(args.out).with_name("train_step_cost"), result, "\n".join(lines) + "\n")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-config", action="store_true",
                   help="instead: seconds per training step of every conf/gan config at --sizes "
                        "(writes results/benchmarks/train_step_cost.md)")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="--per-config: image sizes")
    p.add_argument("--configs", nargs="*", default=None, help="--per-config: GAN configs (default: all)")
    p.add_argument("--budget", type=float, default=30.0, help="--per-config: seconds of timed steps per config")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "train_throughput"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.per_config:
        return per_config(args, device)
    torch.manual_seed(0)
    batches = [torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device) * 2 - 1
               for _ in range(args.steps)]

    gan, opts, cfg = framework_model(args.image_size, args.channels, device)
    counter = iter(range(10 ** 9))

    def framework_step(real):
        step = next(counter)
        gan.train_step({"images": real}, opts, step)
        gan.update_ema(0.999)

    plain_step = plain_loop(args.image_size, args.channels, cfg.latent_dim, cfg.g_filters, device)
    for b in batches[:args.warmup]:
        framework_step(b)
        plain_step(b)

    loop_run = full_loop(args.image_size, args.channels, batches, device)
    fw, pl, fl = [], [], []
    for r in range(args.rounds):
        order = [("framework", framework_step, fw), ("plain", plain_step, pl)]
        for _, fn, acc in (order if r % 2 == 0 else order[::-1]):
            acc.append(len(batches) * args.batch_size / timed(fn, batches, device))
        t0 = time.perf_counter()
        loop_run(batches)  # ends with a checkpoint write, which synchronises a GPU
        fl.append(len(batches) * args.batch_size / (time.perf_counter() - t0))
    result = {
        "framework_img_per_s": statistics.median(fw), "plain_img_per_s": statistics.median(pl),
        "ratio": statistics.median(fw) / statistics.median(pl),
        "full_loop_img_per_s": statistics.median(fl),
        "full_loop_ratio": statistics.median(fl) / statistics.median(pl),
        "framework_rounds": fw, "plain_rounds": pl, "full_loop_rounds": fl,
        "config": {"gan": "dcgan", "image_size": args.image_size, "channels": args.channels,
                   "batch_size": args.batch_size, "steps_per_round": args.steps, "rounds": args.rounds,
                   "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "machine": platform.machine(), "processor": platform.processor()},
        "note": "framework = gan.train_step + gan.update_ema (EMA is extra work the plain loop does not do)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(
        "# DCGAN training throughput: framework vs plain PyTorch\n\n"
        f"{args.image_size} px, {args.channels} channels, batch {args.batch_size}, {args.steps} steps x "
        f"{args.rounds} alternating rounds, device {device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}.\n\n"
        "| loop | images/s (median) |\n|---|---|\n"
        f"| framework (`gan.train_step` + `update_ema`) | {result['framework_img_per_s']:.1f} |\n"
        f"| whole training loop (`benchmark.train_loop.train`: + batching, progress bar, logging, final checkpoint "
        f"and sample grid, model construction) | {result['full_loop_img_per_s']:.1f} |\n"
        f"| plain PyTorch DCGAN loop | {result['plain_img_per_s']:.1f} |\n\n"
        f"**ratio framework step / plain = {result['ratio']:.3f}; whole loop / plain = "
        f"{result['full_loop_ratio']:.3f}** (target >= 0.9)\n")
    print(json.dumps({k: result[k] for k in ("framework_img_per_s", "full_loop_img_per_s", "plain_img_per_s",
                                              "ratio", "full_loop_ratio")}))
    return result


if __name__ == "__main__":
    main()

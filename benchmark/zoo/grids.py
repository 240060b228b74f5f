"""Latent grids of a package as labelled PNGs, and a small static HTML page showing them.

- :func:`interpolation_images`: rows = pairs of seeds, columns = steps from one latent to the other: slerp in z, or,
  for style-based models (a generator with ``mapping``), lerp in w (the mapped latent, the space StyleGAN
  interpolates in). Class-conditional models keep the class of the row's first seed along the row.
- :func:`sweep_images`: rows = seeds, columns = classes (conditional models), masks (mask-conditioned models, drawn
  from the package's training masks) or nothing (one row of seeds).
Per-sample noise of style-based models is fixed per row (its seed), so only the latent moves along a row.
:func:`render_grid` draws the cells upscaled (nearest neighbour) with row and column labels; for models with masks
(image+mask pairs, or the input mask of a mask-conditioned model) every cell shows the image and its mask side by
side, the mask in a colour-blind-safe palette with a legend under the grid.
"""
from __future__ import annotations

import html
import io
import math
from pathlib import Path

import numpy as np
import torch

from medsynbench.benchmark.zoo.generate import _run_chunk, SamplePlan
from medsynbench.benchmark.zoo.package import PackageError
from medsynbench.gans.latent.edits import slerp
from medsynbench.io import atomic_write

# Okabe-Ito colours (colour-blind safe); class 0 (background) is black
MASK_PALETTE = [(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                (213, 94, 0), (204, 121, 167), (255, 255, 255)]
CELL_TARGET_PX = 96  # cells are upscaled by an integer factor to at least this size (64 px images: x2)


def _z(gan, seed: int) -> torch.Tensor:
    return torch.randn(1, gan.latent_dim, generator=torch.Generator().manual_seed(int(seed)))


def _cat(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def interpolation_images(gan, seeds: list[tuple[int, int]], steps: int = 8, label: int | None = None,
                         conditioning: dict | None = None) -> tuple[dict, str]:
    """``{"images": [rows*steps, C, H, W] in [-1, 1], "masks"?, "labels"?}`` and the space interpolated in
    (``z-slerp`` or ``w-lerp``)."""
    from medsynbench.gans.pairs import split_pair

    net = gan.g_ema.eval()
    device = next(gan.parameters()).device
    style = hasattr(net, "mapping") and hasattr(net, "synthesis")
    rows = []
    for s0, s1 in seeds:
        plan = SamplePlan(gan, steps, s0, *(_conditioning(conditioning)))
        plan.noise_seeds = plan.noise_seeds[:1].expand(steps).clone()  # same noise along the row
        if plan.labels is not None:
            plan.labels = torch.full((steps,), int(plan.labels[0] if label is None else label))
        if plan.mask_index is not None:
            plan.mask_index = plan.mask_index[:1].expand(steps).clone()
        if plan.masks is not None:
            plan.masks = plan.masks[:1].expand(steps, -1, -1).clone()
        z0, z1 = _z(gan, s0), _z(gan, s1)
        ts = torch.linspace(0, 1, steps)
        if style:
            labels = None if plan.labels is None else plan.labels.to(device)
            w0 = net.mapping(z0.expand(steps, -1).to(device), labels, truncation_psi=gan.truncation_psi)
            w1 = net.mapping(z1.expand(steps, -1).to(device), labels, truncation_psi=gan.truncation_psi)
            w = w0 + (w1 - w0) * ts.to(device)[:, None]
            noise = _style_noise(net, plan.noise_seeds, device)
            x = net.synthesis(w.unsqueeze(1).repeat(1, net.num_ws, 1), noise=noise) if _takes_noise(net) else \
                net.synthesis(w.unsqueeze(1).repeat(1, net.num_ws, 1))
            img, msk = split_pair(x.float().clamp(-1, 1).cpu(), gan.image_channels,
                                  gan.num_mask_classes if x.shape[1] > gan.image_channels else 0)
            row = {"images": img}
            if msk is not None:
                row["masks"] = msk.long()
            if plan.labels is not None:
                row["labels"] = plan.labels
            rows.append(row)
        else:
            z = torch.cat([slerp(z0, z1, float(t)) for t in ts])
            rows.append(_run_chunk(gan, plan, 0, steps, z))
    return _cat(rows), "w-lerp" if style else "z-slerp"


def _takes_noise(net) -> bool:
    import inspect

    return "noise" in inspect.signature(net.synthesis.forward).parameters


def _style_noise(net, noise_seeds, device):
    per = []
    for s in noise_seeds.tolist():
        g = torch.Generator().manual_seed(int(s))
        per.append([torch.randn(1, 1, h, w, generator=g) for h, w in net.synthesis.noise_shapes()])
    return [torch.cat(maps).to(device) for maps in zip(*per)]


def _conditioning(conditioning: dict | None):
    c = conditioning or {}
    return c.get("train_labels"), c.get("train_masks")


@torch.no_grad()
def sweep_images(gan, seeds: list[int], conditioning: dict | None = None, n_masks: int = 6) -> tuple[dict, int, str]:
    """Rows = seeds; columns = every class (conditional), ``n_masks`` training masks (mask-conditioned) or one row
    of seeds. Returns the images (+ masks, labels) dict, the column count and the column kind."""
    _, train_masks = _conditioning(conditioning)
    rows = []
    if gan.num_classes:
        cols, kind = gan.num_classes, "class"
        for s in seeds:
            rows.append(_plan_images(gan, cols, s, labels=torch.arange(cols), noise_fixed=True))
    elif gan.takes_masks and train_masks is not None:
        cols, kind = min(n_masks, len(train_masks)), "mask"
        for s in seeds:
            rows.append(_plan_images(gan, cols, s, masks=torch.as_tensor(train_masks[:cols]).long(), noise_fixed=True))
    else:
        cols, kind = len(seeds), "seed"
        rows.extend(_plan_images(gan, 1, s) for s in seeds)
    return _cat(rows), cols, kind


def _plan_images(gan, n, seed, labels=None, masks=None, noise_fixed=False) -> dict:
    plan = SamplePlan(gan, n, seed, labels=labels, masks=masks)
    z = _z(gan, seed).expand(n, -1).clone()  # one latent per row: only the condition changes
    if noise_fixed:
        plan.noise_seeds = plan.noise_seeds[:1].expand(n).clone()
    return _run_chunk(gan, plan, 0, n, z)


# --- drawing ---------------------------------------------------------------------------------------------------------
def _rgb(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, 3]: 1 channel as grey, 3 as RGB, other counts: the first channel."""
    x = images.float()
    x = x if x.shape[1] == 3 else x[:, :1].repeat(1, 3, 1, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def colour_masks(masks: torch.Tensor) -> np.ndarray:
    """[N, H, W] class indices -> uint8 [N, H, W, 3] in :data:`MASK_PALETTE` (cycled past its length)."""
    palette = np.array(MASK_PALETTE, dtype=np.uint8)
    m = masks.long().numpy()
    return palette[np.where(m == 0, 0, (m - 1) % (len(palette) - 1) + 1)]


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def render_grid(images: torch.Tensor, ncol: int, path: str | Path, masks: torch.Tensor | None = None,
                row_labels: list[str] | None = None, col_labels: list[str] | None = None,
                mask_class_names: list[str] | None = None, scale: int | None = None, pad: int = 8) -> dict:
    """Draw ``images`` ([nrow*ncol, C, H, W], [-1, 1]) as a labelled grid PNG; with ``masks`` each cell is the
    image and its coloured mask side by side, with a legend of the mask classes under the grid. Returns the layout:
    ``{"path", "scale", "cells": [(x, y)] top-left corner of each image, "mask_dx": x offset of a cell's mask from
    its image (None without masks)}``."""
    from PIL import Image, ImageDraw

    n, _, h, w = images.shape
    nrow = math.ceil(n / ncol)
    scale = scale or max(1, math.ceil(CELL_TARGET_PX / max(h, w)))
    sh, sw, gap = h * scale, w * scale, 2
    cell_w = sw * 2 + gap if masks is not None else sw
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = pad + (int(max(probe.textlength(str(t), font=font) for t in row_labels)) + 8 if row_labels else 0)
    top = pad + (18 if col_labels else 0)
    legend = []
    if masks is not None:
        names = list(mask_class_names or [])
        n_cls = max(len(names), int(masks.max()) + 1 if masks.numel() else 1)
        legend = [names[k] if k < len(names) else f"class {k}" for k in range(n_cls)]
    legend_w = left + int(probe.textlength("mask: ", font=font)) + sum(
        25 + int(probe.textlength(t, font=font)) for t in legend)
    width = max(left + ncol * (cell_w + pad), legend_w + pad if legend else 0)
    height = top + nrow * (sh + pad) + (20 if legend else 0)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    pixels = _rgb(images)
    coloured = colour_masks(masks) if masks is not None else None
    cells = []
    for i in range(n):
        r, c = divmod(i, ncol)
        x, y = left + c * (cell_w + pad), top + r * (sh + pad)
        canvas.paste(Image.fromarray(pixels[i]).resize((sw, sh), Image.NEAREST), (x, y))
        if coloured is not None:
            canvas.paste(Image.fromarray(coloured[i]).resize((sw, sh), Image.NEAREST), (x + sw + gap, y))
        cells.append((x, y))
    for c, text in enumerate(col_labels or []):
        draw.text((left + c * (cell_w + pad), pad), _fit(draw, str(text), font, cell_w), fill=(0, 0, 0), font=font)
    for r, text in enumerate(row_labels or []):
        draw.text((pad, top + r * (sh + pad) + sh // 2 - 7), str(text), fill=(0, 0, 0), font=font)
    if legend:
        x, y = left, height - 17
        draw.text((x, y), "mask:", fill=(0, 0, 0), font=font)
        x += int(draw.textlength("mask: ", font=font))
        for k, label in enumerate(legend):
            draw.rectangle([x, y + 1, x + 11, y + 12], fill=tuple(int(v) for v in colour_masks(
                torch.tensor([[[k]]]))[0, 0, 0]), outline=(0, 0, 0))
            draw.text((x + 15, y), label, fill=(0, 0, 0), font=font)
            x += 25 + int(draw.textlength(label, font=font))
    buf = io.BytesIO()
    canvas.save(buf, format="png")
    atomic_write(Path(path), lambda fh: fh.write(buf.getvalue()))
    return {"path": Path(path), "scale": scale, "cells": cells, "mask_dx": sw + gap if masks is not None else None}


def _names(names, n: int, prefix: str) -> list[str]:
    names = list(names or [])
    return [names[k] if k < len(names) else f"{prefix} {k}" for k in range(n)]


def write_grids(package_dir: str | Path, out_dir: str | Path, seeds=(0, 1, 2, 3), steps: int = 8,
                device="cpu") -> dict:
    """Interpolation grid + sweep grid of a package as labelled PNGs and an ``index.html`` showing both."""
    from medsynbench.benchmark.zoo.package import open_package

    vp, gan = open_package(package_dir, device)
    out_dir = Path(out_dir)
    seeds = [int(s) for s in seeds]
    if not seeds or steps < 2:
        raise PackageError(f"grids need at least one seed and steps >= 2 (got seeds={seeds}, steps={steps})")
    meta = vp.metadata
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    classes = _names(dataset.get("class_names"), gan.num_classes or 0, "class")
    mask_names = dataset.get("mask_class_names")
    pairs = list(zip(seeds[:-1], seeds[1:])) or [(seeds[0], seeds[0] + 1)]
    interp, space = interpolation_images(gan, pairs, steps, conditioning=vp.conditioning)
    row_labels = [f"seed {a}->{b}" for a, b in pairs]
    if "labels" in interp:
        row_labels = [f"{t} ({classes[int(interp['labels'][i * steps])]})" for i, t in enumerate(row_labels)]
    ts = [f"t={float(t):.2f}" for t in torch.linspace(0, 1, steps)]
    g_interp = render_grid(interp["images"], steps, out_dir / "interpolation.png", interp.get("masks"), row_labels,
                           ts, mask_names)
    sweep, cols, kind = sweep_images(gan, seeds, vp.conditioning)
    if kind == "class":
        s_rows, s_cols = [f"seed {s}" for s in seeds], classes
    elif kind == "mask":
        s_rows, s_cols = [f"seed {s}" for s in seeds], [f"training mask {i}" for i in range(cols)]
    else:
        s_rows, s_cols = None, [f"seed {s}" for s in seeds]
    g_sweep = render_grid(sweep["images"], cols, out_dir / "sweep.png", sweep.get("masks"), s_rows, s_cols,
                          mask_names)
    shown_masks = sweep["masks"] if "masks" in sweep else interp.get("masks")
    mask_note = "" if shown_masks is None else (
        "<p>Each cell: the image, and beside it " + ("the input mask it is conditioned on" if gan.takes_masks else
                                                     "the mask generated with it")
        + f" (classes: {html.escape(', '.join(_names(mask_names, int(shown_masks.max()) + 1, 'class')))}; colours in "
          "the legend under each grid).</p>")
    arch = (meta.get("architecture") or {}).get("name", "?")
    facts = ", ".join(f"{k}: {html.escape(str(v))}" for k, v in (
        ("architecture", arch), ("dataset", dataset.get("name", meta.get("dataset"))),
        ("modality", meta.get("modality")), ("resolution", meta.get("resolution")),
        ("checkpoint step", (meta.get("source") or {}).get("step"))) if v is not None)
    sweep_what = {"class": "columns = classes (same z per row)", "mask": "columns = training masks (same z per row)",
                  "seed": "columns = seeds (one latent each, a single row)"}[kind]
    sweep_what = ("rows = seeds, " if s_rows else "") + sweep_what
    sweep_what = sweep_what[0].upper() + sweep_what[1:]
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(vp.id)}: latent grids</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{image-rendering:pixelated;border:1px solid #ccc}}
figure{{margin:1em 0;overflow-x:auto}} figcaption{{color:#333;margin:.3em 0;max-width:60em}}</style></head><body>
<h1>{html.escape(vp.id)}: latent grids</h1><p>{facts}</p>{mask_note}
<h2>Interpolation</h2><figure><figcaption>
{'Lerp in w (the mapped latent of a style-based generator)' if space == 'w-lerp' else 'Slerp in z'}: each row
goes from the first seed's latent (t=0) to the second's (t=1); per-sample noise{', class' if 'labels' in interp else ''}
{' and mask' if gan.takes_masks else ''} fixed along a row.</figcaption>
<img src='interpolation.png' alt='interpolation grid'></figure>
<h2>Sweep</h2><figure><figcaption>{sweep_what}.</figcaption>
<img src='sweep.png' alt='sweep grid'></figure></body></html>
"""
    atomic_write(out_dir / "index.html", lambda fh: fh.write(page.encode()))
    return {"interpolation": str(g_interp["path"]), "sweep": str(g_sweep["path"]), "html": str(out_dir / "index.html"),
            "space": space, "sweep_kind": kind, "layout": {"interpolation": g_interp, "sweep": g_sweep},
            "samples": {"interpolation": interp, "sweep": sweep}}

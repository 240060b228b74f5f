"""Generation from a model package: chunked with bounded memory, to a folder (images + masks + manifest CSV with the
labels, resumable) or in memory, the same samples for the same seed as the run's own sampler, and torch datasets.

Sameness: for ``seed`` the samples equal ``evaluate.sample_imageset(gan, n, seed, bundle)`` of the trained run (which
calls ``GAN.sample``): class-conditional models draw labels with the real training label frequencies
(``Generator().manual_seed(seed)``), mask-conditioned ones real training masks
(``gans.base.draw_train_masks``), from the ``conditioning.safetensors`` of the package; then the latents come from
``Generator().manual_seed(seed)``: z for all n, then one noise seed per sample (``GAN.sample``'s order). Here z is
drawn chunk by chunk from the same generator (a CPU generator's sequential draws equal one big draw; checked by
tests/test_zoo.py), so memory holds one chunk of images and 8-16 bytes per sample of seeds and labels, never all
images.

Folder layout: ``images/<index>.png`` (``.npy`` when the channel count is neither 1 nor 3), ``masks/<index>.png``,
``manifest.csv`` (index, image, mask, label, package_id, seed), ``generation.json`` (parameters + status). A chunk's
rows are appended to the manifest (one write, fsync) only after its files are written, so an interrupted generation
resumes at the first index the manifest lacks; a relaunch with other parameters is refused.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from medsynbench.benchmark.zoo.package import PackageError, VerifiedPackage, build_generator, open_package
from medsynbench.gans.pairs import split_pair
from medsynbench.io import array_hash

MANIFEST_CSV = "manifest.csv"
GENERATION_JSON = "generation.json"
COLUMNS = ["index", "image", "mask", "label", "package_id", "seed"]


# --- the sampling plan: what GAN.sample / sample_imageset draw, without holding every sample ----------------------
class ZStream:
    """Rows of ``torch.randn(n, d, generator=g)`` handed out a few at a time, drawn in blocks whose element count is
    a multiple of 16 (the CPU normal sampler fills 16 values at a time and treats a tensor's last partial block of 16
    specially), the last block being all the remaining rows: the rows equal one big draw's, with one block in memory."""

    def __init__(self, state, n: int, d: int, gen: torch.Generator | None = None):
        import math

        self.gen = gen if gen is not None else torch.Generator()
        if state is not None:
            self.gen.set_state(state)
        self.n, self.d, self.drawn = n, d, 0
        unit = 16 // math.gcd(d, 16)  # rows per 16-aligned group
        self.block = max(unit, (65536 // max(d, 1)) // unit * unit)
        self.buffer = torch.empty(0, d)

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if len(self.buffer) == 0:
                left = self.n - self.drawn
                rows = left if left <= 2 * self.block else self.block
                self.buffer = torch.randn(rows, self.d, generator=self.gen)
                self.drawn += rows
            part, self.buffer = self.buffer[:k], self.buffer[k:]
            parts.append(part)
            k -= len(part)
        return torch.cat(parts) if parts else torch.empty(0, self.d)


class SamplePlan:
    """Per-sample conditioning (labels, mask indices, noise seeds) for n samples, and the generator state where z
    starts, so that any chunk [a, b) can be produced alone, equal to rows a..b of one ``GAN.sample`` call."""

    def __init__(self, gan, n: int, seed: int, train_labels=None, train_masks=None, labels=None, masks=None):
        self.n, self.seed = int(n), int(seed)
        if self.n < 1:
            raise PackageError(f"num_samples must be >= 1, got {n}")
        self.labels = self.masks = self.mask_index = None
        self.train_masks = None
        if labels is not None:
            if not gan.num_classes:
                raise PackageError(f"{gan.name} is unconditional: it cannot take labels")
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if len(labels) == 1:
                labels = labels.expand(self.n).clone()
            if labels.shape != (self.n,) or labels.min() < 0 or labels.max() >= gan.num_classes:
                raise PackageError(f"labels must be {self.n} (or 1) class indices in [0, {gan.num_classes})")
            self.labels = labels
        elif gan.num_classes and train_labels is not None:  # sample_imageset: real training label frequencies
            g = torch.Generator().manual_seed(self.seed)
            self.labels = train_labels[torch.randint(len(train_labels), (self.n,), generator=g)].long()
        if masks is not None:
            if not gan.takes_masks:
                raise PackageError(f"{gan.name} does not take masks (it generates image-mask pairs itself)")
            masks = torch.as_tensor(masks).long()
            if masks.shape != (self.n, gan.image_size, gan.image_size):
                raise PackageError(f"masks must have shape [{self.n}, {gan.image_size}, {gan.image_size}]")
            self.masks = masks
        elif gan.takes_masks and train_masks is not None:  # gans.base.draw_train_masks, index by index
            g = torch.Generator().manual_seed(self.seed + 0x5EED)
            self.mask_index = torch.randint(len(train_masks), (self.n,), generator=g)
            self.train_masks = torch.as_tensor(train_masks)
        # GAN.sample: z (n x latent), then noise seeds, then labels / masks the model draws itself
        gen = torch.Generator().manual_seed(self.seed)
        self.z_state = gen.get_state()
        ZStream(None, self.n, gan.latent_dim, gen).take(self.n)  # advance past z without keeping it
        self.noise_seeds = torch.randint(0, 2 ** 62, (self.n,), generator=gen)
        if self.labels is None:
            self.labels = gan._sample_labels(self.n, gen)
        if self.masks is None and self.mask_index is None and gan.takes_masks:
            self.masks = gan._sample_masks(self.n, gen)  # SPADE without training masks: its own mask bank

    def chunks(self, gan, batch_size: int, start: int = 0):
        """Yield (start, stop, z) for consecutive chunks from ``start`` on (earlier rows are drawn and dropped)."""
        stream = ZStream(self.z_state, self.n, gan.latent_dim)
        stream.take(start)
        for a in range(start, self.n, batch_size):
            b = min(self.n, a + batch_size)
            yield a, b, stream.take(b - a)

    def chunk_masks(self, a: int, b: int):
        if self.masks is not None:
            return self.masks[a:b]
        if self.mask_index is not None:
            return self.train_masks[self.mask_index[a:b]].long()
        return None


@torch.no_grad()
def _run_chunk(gan, plan: SamplePlan, a: int, b: int, z: torch.Tensor) -> dict:
    """Rows a..b exactly as ``GAN.sample`` computes them (g_ema in eval mode, clamp, split image / mask)."""
    device = next(gan.parameters()).device
    labels = None if plan.labels is None else plan.labels[a:b]
    masks = plan.chunk_masks(a, b)
    net = gan.g_ema
    net.eval()
    x = gan._generate(net, z.to(device), None if labels is None else labels.to(device),
                      None if masks is None else masks.to(device), plan.noise_seeds[a:b])
    x = x.float().clamp(-1, 1).cpu()
    img, msk = split_pair(x, gan.image_channels, gan.num_mask_classes if x.shape[1] > gan.image_channels else 0)
    out = {"images": img}
    if masks is not None:
        out["masks"] = masks.long().cpu()
    elif msk is not None:
        out["masks"] = msk.long()
    if labels is not None:
        out["labels"] = labels
    return out


# --- writing ---------------------------------------------------------------------------------------------------------
def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _write_chunk(out_dir: Path, out: dict, a: int, package_id: str, seed: int) -> list[list]:
    from PIL import Image

    rows = []
    pixels = _to_uint8(out["images"])
    for i, px in enumerate(pixels):
        idx = a + i
        if px.shape[-1] in (1, 3):
            name = f"images/{idx:07d}.png"
            Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(out_dir / name)
        else:
            name = f"images/{idx:07d}.npy"
            np.save(out_dir / name, out["images"][i].numpy())
        mask_name = ""
        if "masks" in out:
            mask_name = f"masks/{idx:07d}.png"
            Image.fromarray(out["masks"][i].numpy().astype(np.uint8)).save(out_dir / mask_name)
        label = int(out["labels"][i]) if "labels" in out else ""
        rows.append([idx, name, mask_name, label, package_id, seed])
    return rows


def _read_manifest_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):  # a write cut short: drop the incomplete last line
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    return list(csv.DictReader(io.StringIO(text)))


def _append_rows(path: Path, rows: list[list], header: bool) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(rows)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _open(source, device):
    """(VerifiedPackage, gan) of a package folder, or of an id in a Registry (verified against its checksum)."""
    if isinstance(source, VerifiedPackage):
        from medsynbench.benchmark.utils import resolve_device

        return source, build_generator(source, resolve_device(str(device)))
    if isinstance(source, tuple):  # (registry, id)
        registry, pid = source
        return open_package(registry.resolve(pid), device, registry.get(pid).manifest_sha256)
    return open_package(source, device)


def generate(registry_or_package, model_id: str | None = None, num_samples: int = 100, output_dir=None,
             batch_size: int = 64, seed: int = 0, labels=None, masks=None, device="cpu", progress=None) -> dict:
    """Generate ``num_samples`` from a package (``generate(pkg_dir, num_samples=...)``) or a registry id
    (``generate(registry, "id", ...)``), ``batch_size`` at a time.

    ``output_dir=None``: returns ``{"images", "masks"?, "labels"?}`` tensors (images in [-1, 1]), the same as the
    run's sampler. With ``output_dir``: writes the folder described in the module docstring (resuming an
    interrupted generation with the same parameters) and returns ``{"output_dir", "manifest", "n", "resumed_from"}``.
    ``labels``: one class index or one per sample (conditional models); ``masks``: [n, H, W] (mask-conditioned)."""
    if model_id is not None:
        vp, gan = _open((registry_or_package, model_id), device)
    else:
        vp, gan = _open(registry_or_package, device)
    if int(batch_size) < 1:
        raise PackageError(f"batch_size must be >= 1, got {batch_size}")
    plan = SamplePlan(gan, num_samples, seed, vp.conditioning.get("train_labels"),
                      vp.conditioning.get("train_masks"), labels, masks)
    if output_dir is None:
        parts = [_run_chunk(gan, plan, a, b, z) for a, b, z in plan.chunks(gan, int(batch_size))]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    out_dir = Path(output_dir)
    params = {"package_id": vp.id, "manifest_files": vp.manifest["files"], "num_samples": int(num_samples),
              "seed": int(seed), "labels": None if labels is None else torch.as_tensor(labels).tolist(),
              "masks_sha256": None if masks is None else array_hash(torch.as_tensor(masks))}
    info_path, manifest = out_dir / GENERATION_JSON, out_dir / MANIFEST_CSV
    start = 0
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("params") != params:
            raise PackageError(f"{out_dir} holds a generation with other parameters ({info_path}); choose another "
                               "output_dir or remove it")
        rows = _read_manifest_rows(manifest)
        start = len(rows)
        if start and [int(r["index"]) for r in rows] != list(range(start)):
            raise PackageError(f"{manifest}: rows are not indices 0..{start - 1}; remove the folder and regenerate")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise PackageError(f"output_dir {out_dir} exists and is not a generation folder; choose an empty folder")
    from medsynbench.io import atomic_write_json

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    if gan.num_mask_classes or gan.takes_masks:
        (out_dir / "masks").mkdir(exist_ok=True)
    atomic_write_json(info_path, {"params": params, "status": "in_progress", "batch_size": int(batch_size)})
    for a, b, z in plan.chunks(gan, int(batch_size), start=start):
        rows = _write_chunk(out_dir, _run_chunk(gan, plan, a, b, z), a, vp.id, int(seed))
        _append_rows(manifest, rows, header=not manifest.exists() or manifest.stat().st_size == 0)
        if progress:
            progress(b, plan.n)
    atomic_write_json(info_path, {"params": params, "status": "complete", "batch_size": int(batch_size)})
    return {"output_dir": str(out_dir), "manifest": str(manifest), "n": plan.n, "resumed_from": start}


# --- torch datasets --------------------------------------------------------------------------------------------------
class SyntheticDataset(Dataset):
    """Items ``{"image": [C,H,W] in [-1,1], "mask"?: [H,W] int64, "label"?: int64, "synthetic": True}`` from a
    generation folder (its manifest) or an in-memory result of :func:`generate`."""

    def __init__(self, source):
        self.memory = None
        if isinstance(source, dict) and "images" in source:
            self.memory = source
            self.n = len(source["images"])
            self.has_mask, self.has_label = "masks" in source, "labels" in source
        else:
            self.root = Path(source["output_dir"] if isinstance(source, dict) else source)
            rows = _read_manifest_rows(self.root / MANIFEST_CSV)
            if not rows:
                raise PackageError(f"{self.root / MANIFEST_CSV} is missing or empty: not a generation folder")
            self.rows = rows
            self.n = len(rows)
            self.has_mask, self.has_label = bool(rows[0]["mask"]), rows[0]["label"] != ""

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if self.memory is not None:
            item = {"image": self.memory["images"][i]}
            if self.has_mask:
                item["mask"] = self.memory["masks"][i]
            if self.has_label:
                item["label"] = self.memory["labels"][i]
            return {**item, "synthetic": True}
        from PIL import Image

        row = self.rows[i]
        path = self.root / row["image"]
        if path.suffix == ".npy":
            image = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            arr = np.asarray(Image.open(path))
            arr = arr[..., None] if arr.ndim == 2 else arr
            image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1
        item = {"image": image, "synthetic": True}
        if self.has_mask:
            item["mask"] = torch.from_numpy(np.asarray(Image.open(self.root / row["mask"])).astype(np.int64))
        if self.has_label:
            item["label"] = torch.tensor(int(row["label"]))
        return item


class ImageSetDataset(Dataset):
    """A real :class:`~medsynbench.types.ImageSet` (e.g. ``load_dataset(...).train``) with the same item keys."""

    def __init__(self, imageset):
        self.set = imageset

    def __len__(self) -> int:
        return len(self.set)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.set.images[i], "synthetic": False}
        if self.set.masks is not None:
            item["mask"] = self.set.masks[i].long()
        if self.set.labels is not None:
            item["label"] = self.set.labels[i].long()
        return item


class _Keys(Dataset):
    def __init__(self, ds, keys):
        self.ds, self.keys = ds, keys

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        return {k: item[k] for k in self.keys}


def as_dataset(source, real=None) -> Dataset:
    """A torch Dataset of generated samples (a generation folder or an in-memory result), combined with ``real``
    data (an ImageSet or a Dataset with the same item keys) when given: only the keys both sides have are kept."""
    synthetic = source if isinstance(source, Dataset) else SyntheticDataset(source)
    if real is None:
        return synthetic
    real = real if isinstance(real, Dataset) else ImageSetDataset(real)
    keys = [k for k in ("image", "mask", "label", "synthetic") if k in synthetic[0] and k in real[0]]
    return ConcatDataset([_Keys(synthetic, keys), _Keys(real, keys)])


def as_dataloader(source, batch_size: int = 32, shuffle: bool = False, real=None, **kwargs) -> DataLoader:
    """``DataLoader(as_dataset(source, real), batch_size, shuffle, **kwargs)``."""
    return DataLoader(as_dataset(source, real), batch_size=batch_size, shuffle=shuffle, **kwargs)

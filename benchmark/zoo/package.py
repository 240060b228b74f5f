"""Model packages: a trained generator as a self-contained, verifiable folder, and the one safe way to load one.

A package is a folder::

    medsynbench_package.json   the manifest: format, version, id and the SHA-256 of every other file
    weights.safetensors        the sampling generator's tensors (g_ema + the model's own buffers; no discriminator)
    model_args.json            the constructor arguments (``_target_`` names a registered GAN class)
    metadata.json              modality, anatomy, dataset, train size, architecture, resolution, channels, masks /
                               labels produced, licence of the training data, authors, citation, creation date and
                               every metric of the results store with its protocol
    preprocessing.json         the run's ``data`` settings (size, resize filter, colour, normalisation)
    conditioning.safetensors   (optional) real training labels / masks that the run's own sampler draws from
                               (class-conditional and mask-conditioned models), so that a seed gives the same samples
    MODEL_CARD.md              a short human-readable card

A package is untrusted input. :func:`verify_package` reads every listed file once, checks its SHA-256 against the
manifest and parses the verified bytes (never the file a second time): JSON for arguments and metadata, safetensors
for tensors (no pickle is ever loaded), the GAN class resolved by :func:`medsynbench.gans.base.resolve_gan_class`
(only registered classes). A path that escapes the folder (``..``, absolute, a symlink anywhere on the way), a
missing file, a checksum mismatch, an unknown architecture or weights that are not safetensors (a ``.pt`` pickle,
with code or without) each raise :class:`PackageError` naming the package, the file and the problem.
:func:`export_run` writes into a temporary sibling folder and renames it into place at the end: a failed export
leaves nothing behind.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from medsynbench.benchmark.validate import ConfigError
from medsynbench.io import sha256_file

FORMAT = "medsynbench-model-package"
FORMAT_VERSION = 1
MANIFEST = "medsynbench_package.json"
WEIGHTS = "weights.safetensors"
MODEL_ARGS = "model_args.json"
METADATA = "metadata.json"
PREPROCESSING = "preprocessing.json"
CONDITIONING = "conditioning.safetensors"
MODEL_CARD = "MODEL_CARD.md"
REQUIRED_FILES = (WEIGHTS, MODEL_ARGS, METADATA)
#: state-dict prefixes a package leaves out: the discriminator is not needed to sample, ``generator`` is ``g_ema``
EXCLUDED_PREFIXES = ("discriminator.", "generator.")

# What the project knows about its configured datasets (the dataset yamls carry no such fields); an export's
# ``metadata`` overrides win. Licences as the datasets' SOURCE.md files state them.
DATASET_FACTS = {
    "isic_mini": {"modality": "dermoscopy", "anatomy": "skin", "license": "CC BY-NC 4.0",
                  "citation": "Codella et al., Skin lesion analysis toward melanoma detection 2018, arXiv:1902.03368"},
    "isic2018": {"modality": "dermoscopy", "anatomy": "skin", "license": "CC BY-NC 4.0",
                 "citation": "Codella et al., Skin lesion analysis toward melanoma detection 2018, arXiv:1902.03368"},
    "kvasir": {"modality": "endoscopy", "anatomy": "colon", "license": "research and educational use (Kvasir-SEG)",
               "citation": "Jha et al., Kvasir-SEG: a segmented polyp dataset, MMM 2020"},
    "acdc": {"modality": "MRI", "anatomy": "heart", "license": "research use, citation required (ACDC)",
             "citation": "Bernard et al., IEEE TMI 37(11), 2018"},
    "chase_db1": {"modality": "fundus photography", "anatomy": "retina", "license": "CC BY 4.0",
                  "citation": "Fraz et al., IEEE TBME 59(9), 2012"},
    "kermany": {"modality": "X-ray", "anatomy": "chest", "license": "CC BY 4.0",
                "citation": "Kermany et al., Cell 172(5), 2018"},
    "pneumoniamnist": {"modality": "X-ray", "anatomy": "chest", "license": "CC BY 4.0",
                       "citation": "Yang et al., MedMNIST v2, Sci. Data 10, 41 (2023)"},
    "breastmnist": {"modality": "ultrasound", "anatomy": "breast", "license": "CC BY 4.0",
                    "citation": "Yang et al., MedMNIST v2, Sci. Data 10, 41 (2023)"},
    "idrid": {"modality": "fundus photography", "anatomy": "retina", "license": "CC BY 4.0 (IDRiD)",
              "citation": "Porwal et al., Data 3(3), 25 (2018)"},
    "sliver07": {"modality": "CT", "anatomy": "liver", "license": "SLIVER07 challenge terms",
                 "citation": "Heimann et al., IEEE TMI 28(8), 2009"},
}


class PackageError(ConfigError):
    """A model package (or registry) cannot be used; the message names the package, the file and the problem.
    A :class:`ConfigError`, so the CLI reports it as one line (exit 2)."""


# --- safe reading --------------------------------------------------------------------------------------------------
def _safe_relpath(pkg: Path, rel: str) -> Path:
    """``pkg / rel`` after refusing anything that could leave the folder: absolute paths, ``..``, backslashes, drive
    letters, and a symlink at any level (checked with lstat, component by component)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise PackageError(f"package {pkg}: file name {rel!r} is not a plain relative path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise PackageError(f"package {pkg}: file {rel!r} is an absolute path (escapes the package folder)")
    if any(part in ("..", "") for part in rel.split("/")) or ".." in pure.parts:
        raise PackageError(f"package {pkg}: file {rel!r} escapes the package folder ('..')")
    current = pkg
    for part in pure.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            raise PackageError(f"package {pkg}: file {rel!r} is missing") from None
        if stat.S_ISLNK(mode):
            raise PackageError(f"package {pkg}: {rel!r} is (or passes through) a symlink, which may point outside "
                               "the package folder; packages must hold plain files")
    if not stat.S_ISREG(os.lstat(current).st_mode):
        raise PackageError(f"package {pkg}: {rel!r} is not a regular file")
    if pkg.resolve() not in current.resolve().parents:
        raise PackageError(f"package {pkg}: file {rel!r} escapes the package folder")
    return current


def _read_verified(pkg: Path, rel: str, expected: str) -> bytes:
    import hashlib

    data = _safe_relpath(pkg, rel).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise PackageError(f"package {pkg}: checksum mismatch for {rel!r}: sha256 {got} != {expected} in {MANIFEST} "
                           "(the file was changed or corrupted)")
    return data


def _json(pkg: Path, rel: str, data: bytes) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"package {pkg}: {rel!r} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise PackageError(f"package {pkg}: {rel!r} holds a {type(value).__name__}, expected a JSON object")
    return value


def _tensors(pkg: Path, rel: str, data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load

    if not rel.endswith(".safetensors"):
        raise PackageError(f"package {pkg}: {rel!r} is not a .safetensors file; packages hold tensors only as "
                           "safetensors (a pickled .pt/.pth/.bin file can run code and is never loaded)")
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04":
        raise PackageError(f"package {pkg}: {rel!r} is a pickle / torch.save file, not safetensors; refused "
                           "without loading it (a pickle can run code)")
    try:
        return st_load(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for malformed headers
        raise PackageError(f"package {pkg}: {rel!r} is not a valid safetensors file: {err}") from None


@dataclass
class VerifiedPackage:
    """A package whose every file was read once and matched its checksum; nothing in it was executed."""

    path: Path
    manifest: dict
    model_args: dict
    metadata: dict
    weights: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)
    conditioning: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.manifest.get("id") or self.metadata.get("id") or self.path.name)


def read_manifest(pkg: str | Path, expected_sha256: str | None = None) -> dict:
    pkg = Path(pkg)
    if not pkg.is_dir():
        raise PackageError(f"model package {pkg} not found (no such folder)")
    path = _safe_relpath(pkg, MANIFEST) if (pkg / MANIFEST).exists() or os.path.islink(pkg / MANIFEST) else None
    if path is None:
        raise PackageError(f"{pkg} is not a model package: {MANIFEST} is missing")
    data = path.read_bytes()
    if expected_sha256 is not None:
        import hashlib

        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise PackageError(f"package {pkg}: checksum mismatch for {MANIFEST}: sha256 {got} != {expected_sha256} "
                               "in the registry")
    manifest = _json(pkg, MANIFEST, data)
    if manifest.get("format") != FORMAT:
        raise PackageError(f"package {pkg}: {MANIFEST} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"package {pkg}: format_version {manifest.get('format_version')!r} is not supported "
                           f"(this medsynbench reads {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and len(v) == 64 for v in files.values()):
        raise PackageError(f"package {pkg}: {MANIFEST} 'files' must map file names to sha256 hex digests")
    missing = [f for f in REQUIRED_FILES if f not in files]
    if missing:
        raise PackageError(f"package {pkg}: {MANIFEST} lists no {missing} (required: {list(REQUIRED_FILES)})")
    return manifest


def verify_package(pkg: str | Path, expected_sha256: str | None = None) -> VerifiedPackage:
    """Read and verify a package (see the module docstring); raises :class:`PackageError` on any problem.
    ``expected_sha256`` is the manifest's checksum as a registry lists it."""
    pkg = Path(pkg)
    manifest = read_manifest(pkg, expected_sha256)
    blobs = {rel: _read_verified(pkg, rel, sha) for rel, sha in sorted(manifest["files"].items())}
    model_args = _json(pkg, MODEL_ARGS, blobs[MODEL_ARGS])
    metadata = _json(pkg, METADATA, blobs[METADATA])
    preprocessing = _json(pkg, PREPROCESSING, blobs[PREPROCESSING]) if PREPROCESSING in blobs else {}
    weights = _tensors(pkg, WEIGHTS, blobs[WEIGHTS])
    conditioning = _tensors(pkg, CONDITIONING, blobs[CONDITIONING]) if CONDITIONING in blobs else {}
    return VerifiedPackage(pkg, manifest, model_args, metadata, weights, preprocessing, conditioning)


def build_generator(vp: VerifiedPackage, device: str | torch.device = "cpu"):
    """The GAN of a verified package: class from the registry only, weights checked key by key."""
    from medsynbench.gans.base import build_from_args

    target = vp.model_args.get("_target_")
    try:
        gan = build_from_args(vp.model_args)
    except ValueError as err:
        raise PackageError(f"package {vp.path}: {MODEL_ARGS}: unknown architecture {target!r}: {err}") from None
    except TypeError as err:
        raise PackageError(f"package {vp.path}: {MODEL_ARGS} does not fit {target!r}: {err}") from None
    expected = {k for k in gan.state_dict() if not k.startswith(EXCLUDED_PREFIXES)}
    got = set(vp.weights)
    if got != expected:
        raise PackageError(f"package {vp.path}: {WEIGHTS} does not match {target!r}: missing "
                           f"{sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}")
    try:
        result = gan.load_state_dict(vp.weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise PackageError(f"package {vp.path}: {WEIGHTS} does not fit {target!r}: {str(err)[:300]}") from None
    assert not result.unexpected_keys
    gan.generator.load_state_dict(gan.g_ema.state_dict())  # ema=False samples the same generator
    gan.eval()
    return gan.to(device)


def open_package(path: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None):
    """``(VerifiedPackage, gan)``: the package verified (against a registry's manifest checksum when given), then its
    generator built on ``device`` (may be ``"auto"``)."""
    from medsynbench.benchmark.utils import resolve_device

    vp = verify_package(path, expected_sha256)
    return vp, build_generator(vp, resolve_device(str(device)))


def load_generator(path_or_package_dir: str | Path, device: str | torch.device = "cpu"):
    """``(gan, metadata)`` of a model package folder (verified: see :func:`verify_package`). ``device`` may be
    ``"auto"``. The metadata gets ``package_dir`` and, for conditioned models, ``conditioning`` tensors under the key
    ``"_conditioning"`` are NOT added: use :func:`verify_package` for those."""
    vp, gan = open_package(path_or_package_dir, device)
    return gan, {**vp.metadata, "package_dir": str(vp.path), "id": vp.id}


# --- export ---------------------------------------------------------------------------------------------------------
def _scalar_fields(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if isinstance(v, (str, int, float, bool)) or v is None
            or (isinstance(v, dict) and len(json.dumps(v, default=str)) < 2000)}


def run_metrics(store_dir: str | Path | None, training_id: str, step: int | None = None) -> dict[str, dict]:
    """Every metric of the results store's completed records of one training, by name (downstream scores as
    ``<metric>@<train_on>``), with its protocol fields (extractor, weights, sample counts, ...), ``higher_is_better``
    and the evaluation it came from. Where several evaluations have a metric, the one of ``step`` (else the newest)
    wins."""
    from medsynbench.benchmark.store import load_records, metric_entries

    if store_dir is None or not (Path(store_dir) / "records").is_dir():
        return {}
    out: dict[str, dict] = {}
    records = [r for r in load_records(store_dir) if r.get("training_id") == training_id
               and r.get("status") == "completed"]
    # the evaluation of the exported step last, so that it wins
    records.sort(key=lambda r: (step is not None and r.get("evaluated_step", (r.get("config") or {})
                                                               .get("train.steps")) == step,
                                str(r.get("recorded_at", ""))))
    for rec in records:
        for entry in metric_entries(rec):
            if not isinstance(entry.get("value"), (int, float)):
                continue
            out[entry["metric"]] = {**_scalar_fields(entry), "evaluation_id": rec.get("evaluation_id"),
                                    "evaluated_step": rec.get("evaluated_step"),
                                    "sample_counts": rec.get("sample_counts")}
    return out


def _metadata(cfg, gan, run_dir: Path, ckpt_path: Path, step: int | None, metrics: dict, extra: dict,
              package_id: str) -> dict:
    from omegaconf import OmegaConf

    dataset = OmegaConf.to_container(cfg.dataset, resolve=False)
    name = str(dataset.get("name"))
    facts = dict(DATASET_FACTS.get(name, {}))
    training = {}
    if (run_dir / "training.json").is_file():
        training = json.loads((run_dir / "training.json").read_text())
    meta = {
        "id": package_id,
        "name": package_id,
        "modality": facts.get("modality"),
        "anatomy": facts.get("anatomy"),
        "dataset": {"name": name, "task": dataset.get("task"), "license": facts.get("license"),
                    "citation": facts.get("citation"), "class_names": dataset.get("class_names"),
                    "mask_class_names": dataset.get("mask_class_names"),
                    "content_sha256": (training.get("data") or {}).get("train_content_sha256")},
        "train_size": cfg.data.get("train_size"),
        "architecture": {"name": str(cfg.gan.get("name", gan.name)), "class": gan.model_args()["_target_"],
                         "latent_dim": gan.latent_dim, "style_based": hasattr(gan.g_ema, "mapping")},
        "resolution": gan.image_size,
        "channels": gan.image_channels,
        "produces": {"images": True, "masks": bool(gan.num_mask_classes or gan.takes_masks),
                     "mask_source": gan.mask_source, "num_mask_classes": gan.num_mask_classes,
                     "labels": bool(gan.num_classes), "num_classes": gan.num_classes,
                     "takes_masks": bool(gan.takes_masks)},
        "license": facts.get("license"),
        "authors": [],
        "citation": facts.get("citation"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"training_id": run_dir.name, "run_dir": str(run_dir), "checkpoint": ckpt_path.name,
                   "step": step, "seed": cfg.get("seed"), "precision": cfg.get("precision"),
                   "gan_config": OmegaConf.to_container(cfg.gan, resolve=True),
                   "train_config": {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items()
                                    if k in ("steps", "batch_size", "lr_g", "lr_d", "optimizer", "ema_decay")}},
        "metrics": metrics,
        "tags": [t for t in (name, facts.get("modality"), facts.get("anatomy"), str(cfg.gan.get("name", gan.name)))
                 if t],
    }
    for key, value in (extra or {}).items():  # the export's own metadata (authors, licence, tags, ...) wins
        meta[key] = value
    return meta


def _model_card(meta: dict) -> str:
    m = meta
    lines = [f"# Model card: {m['id']}", "",
             f"- **Architecture**: {m['architecture']['name']} (`{m['architecture']['class']}`), "
             f"latent dimension {m['architecture']['latent_dim']}",
             f"- **Output**: {m['resolution']} px, {m['channels']} channel(s)"
             + (", image-mask pairs" if m["produces"]["masks"] else "")
             + (f", {m['produces']['num_classes']} classes (conditional)" if m["produces"]["labels"] else ""),
             f"- **Training data**: {m['dataset']['name']} ({m.get('modality')}, {m.get('anatomy')}), "
             f"train size {m.get('train_size')}, licence: {m.get('license')}",
             f"- **Citation of the data**: {m.get('citation')}",
             f"- **Authors**: {', '.join(m.get('authors') or []) or 'not given'}",
             f"- **Source run**: `{m['source']['training_id']}`, checkpoint {m['source']['checkpoint']}",
             f"- **Created**: {m['created']}", "", "## Metrics (from the results store)", ""]
    if m["metrics"]:
        lines += ["| metric | value | better | extractor |", "|---|---|---|---|"]
        for name, rec in sorted(m["metrics"].items()):
            better = "higher" if rec.get("higher_is_better") else "lower"
            lines.append(f"| {name} | {rec['value']:.5g} | {better} | {rec.get('extractor') or ''} |")
    else:
        lines.append("No evaluation of this run is in the results store.")
    lines += ["", "Synthetic data from this model inherits the licence terms of its training data. Load it with "
              "`medsynbench.benchmark.zoo.load_generator(path, device)`: weights are safetensors, every file is "
              "checked against its SHA-256 in `medsynbench_package.json` before use.", ""]
    return "\n".join(lines)


def write_package(out_dir: str | Path, gan, metadata: dict, preprocessing: dict | None = None,
                  conditioning: dict[str, torch.Tensor] | None = None, overwrite: bool = False) -> Path:
    """Write a package folder for ``gan`` (into a temporary sibling, renamed into place at the end)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise PackageError(f"{out_dir} exists; remove it or pass overwrite=true")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in gan.state_dict().items()
                 if not k.startswith(EXCLUDED_PREFIXES)}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        if conditioning:
            save_file({k: v.detach().cpu().contiguous() for k, v in conditioning.items()}, str(tmp / CONDITIONING))
        (tmp / MODEL_ARGS).write_text(json.dumps(gan.model_args(), indent=2, sort_keys=True, default=str))
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
        (tmp / PREPROCESSING).write_text(json.dumps(preprocessing or {}, indent=2, sort_keys=True, default=str))
        (tmp / MODEL_CARD).write_text(_model_card(metadata) if "architecture" in metadata else
                                      f"# {metadata.get('id')}\n")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "id": metadata.get("id"), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for p in [tmp, *tmp.iterdir()]:  # mkdtemp makes 0700: a package is meant to be shared
            p.chmod(0o755 if p.is_dir() else 0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, store_dir: str | Path | None = None,
               step: int | None = None, metadata: dict | None = None, package_id: str | None = None,
               overwrite: bool = False) -> Path:
    """Export a trained run as a package (default ``<run_dir>/../../zoo/packages/<training id>``; checkpoint
    ``step`` or the newest valid one). Metrics come from ``store_dir`` (default: the run's own
    ``paths.store_dir``)."""
    from omegaconf import OmegaConf

    from medsynbench.benchmark.reevaluate import load_run
    from medsynbench.checkpoints import checkpoint_path, checkpoint_step

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {run_dir} not found")
    ckpt = checkpoint_path(run_dir, step) if step is not None else None
    cfg, gan, ckpt_path = load_run(run_dir, torch.device("cpu"), ckpt)
    step = checkpoint_step(ckpt_path)
    store_dir = store_dir if store_dir is not None else cfg.get("paths", {}).get("store_dir")
    package_id = package_id or run_dir.name + (f"-step{step}" if step != cfg.train.steps else "")
    metrics = run_metrics(store_dir, run_dir.name, step if step != cfg.train.steps else None)
    meta = _metadata(cfg, gan, run_dir, ckpt_path, step, metrics, metadata or {}, package_id)
    conditioning = {}
    if gan.num_classes or gan.takes_masks:  # what evaluate.sample_imageset draws from
        from medsynbench.benchmark.data import load_dataset

        bundle = load_dataset(cfg.dataset, cfg.data)
        if gan.num_classes and bundle.train.labels is not None:
            conditioning["train_labels"] = torch.as_tensor(bundle.train.labels).long()
        if gan.takes_masks and bundle.train.masks is not None:
            conditioning["train_masks"] = torch.as_tensor(bundle.train.masks).to(torch.uint8)
    out_dir = Path(out_dir) if out_dir else run_dir.parent.parent / "zoo" / "packages" / package_id
    preprocessing = OmegaConf.to_container(cfg.data, resolve=True)
    return write_package(out_dir, gan, meta, preprocessing, conditioning, overwrite=overwrite)

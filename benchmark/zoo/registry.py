"""Registry indexes: one versioned JSON file listing packages by id, with location and checksum; several combine.

Index file (``registry.json``)::

    {"format": "medsynbench-zoo-registry", "format_version": 1, "name": "team", "version": 7,
     "updated": "2025-...", "packages": {"<id>": {"location": "packages/<id>", "manifest_sha256": "<hex>",
                                                   "metadata": {...}, "loadable": true}}}

``version`` grows by one with every write (under a file lock, written atomically). ``location`` is a path relative to
the index file, an absolute path or a ``file://`` URL; an ``http(s)://`` location (e.g. a medigan model on Zenodo) is
listed and searchable but not loadable here (fetch it, verify it, add the folder). ``manifest_sha256`` is the SHA-256
of the package's manifest, which holds the SHA-256 of every other file: resolving an entry verifies the chain.

:class:`Registry` combines indexes in priority order (``Registry.open([local, team])``): the first that lists an id
wins; the others' entries with the same id are kept as ``shadowed`` and reported.

medigan's ``global.json`` (one object per model id with ``execution`` / ``selection`` / ``description``) imports with
:func:`import_medigan` and the field map :data:`MEDIGAN_FIELD_MAP` (documented in docs/zoo.md); the models stay
non-loadable entries (medigan packages are Python code, which a zoo package never runs).
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from medsynbench.benchmark.zoo.package import MANIFEST, PackageError, read_manifest, verify_package
from medsynbench.io import atomic_write_json, file_lock, sha256_file

REGISTRY_FORMAT = "medsynbench-zoo-registry"
REGISTRY_FORMAT_VERSION = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def empty_index(name: str = "local") -> dict:
    return {"format": REGISTRY_FORMAT, "format_version": REGISTRY_FORMAT_VERSION, "name": name, "version": 0,
            "updated": _now(), "packages": {}}


def read_index(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"registry index {path} not found")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PackageError(f"registry index {path} is not valid JSON: {err}") from None
    if not isinstance(index, dict) or index.get("format") != REGISTRY_FORMAT:
        raise PackageError(f"registry index {path}: 'format' must be {REGISTRY_FORMAT!r}")
    if index.get("format_version") != REGISTRY_FORMAT_VERSION:
        raise PackageError(f"registry index {path}: format_version {index.get('format_version')!r} is not supported")
    if not isinstance(index.get("packages"), dict):
        raise PackageError(f"registry index {path}: 'packages' must be an object of id -> entry")
    for pid, entry in index["packages"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            raise PackageError(f"registry index {path}: package {pid!r} has no 'location' string")
    return index


def _update_index(path: Path, change) -> dict:
    """Read (or create), ``change(index)``, bump the version and write atomically, under a file lock."""
    path = Path(path)
    with file_lock(path):
        index = read_index(path) if path.exists() else empty_index(path.parent.name or "local")
        change(index)
        index["version"] = int(index.get("version", 0)) + 1
        index["updated"] = _now()
        atomic_write_json(path, index)
    return index


def add_package(index_path: str | Path, package_dir: str | Path, relative: bool = True) -> dict:
    """Verify a package folder and list it in the index (created when absent); returns its entry."""
    index_path, package_dir = Path(index_path), Path(package_dir)
    vp = verify_package(package_dir)
    sha = sha256_file(package_dir / MANIFEST)
    try:
        location = package_dir.resolve().relative_to(index_path.resolve().parent).as_posix() if relative else None
    except ValueError:
        location = None
    entry = {"location": location or str(package_dir.resolve()), "manifest_sha256": sha, "metadata": vp.metadata,
             "loadable": True, "added": _now()}
    _update_index(index_path, lambda index: index["packages"].__setitem__(vp.id, entry))
    return {"id": vp.id, **entry}


def remove_package(index_path: str | Path, package_id: str) -> None:
    def change(index):
        if package_id not in index["packages"]:
            raise PackageError(f"registry index {index_path} has no package {package_id!r}")
        del index["packages"][package_id]
    _update_index(Path(index_path), change)


@dataclass
class Entry:
    id: str
    location: str
    manifest_sha256: str | None
    metadata: dict
    loadable: bool
    registry: str
    shadowed: list[str] = field(default_factory=list)

    def local_path(self) -> Path:
        """The package folder of a loadable entry (relative locations are relative to the index file)."""
        parsed = urlparse(self.location)
        if parsed.scheme in ("http", "https", "ftp", "zenodo"):
            raise PackageError(f"package {self.id!r} (registry {self.registry}) lives at {self.location}: remote "
                               "packages are not downloaded here; fetch the folder and add it to a local registry")
        if parsed.scheme == "file":
            return Path(unquote(parsed.path))
        path = Path(self.location)
        return path if path.is_absolute() else Path(self.registry).parent / path


class Registry:
    """Several registry indexes combined in priority order."""

    def __init__(self, entries: dict[str, Entry], sources: list[str]):
        self.entries = entries
        self.sources = sources

    @classmethod
    def open(cls, paths) -> "Registry":
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise PackageError("no registry index given (registries=[path, ...])")
        entries: dict[str, Entry] = {}
        for path in paths:
            index = read_index(path)
            for pid, raw in index["packages"].items():
                entry = Entry(pid, raw["location"], raw.get("manifest_sha256"), raw.get("metadata") or {},
                              bool(raw.get("loadable", True)), str(path))
                if pid in entries:
                    if entries[pid].manifest_sha256 != entry.manifest_sha256:
                        entries[pid].shadowed.append(str(path))
                    continue
                entries[pid] = entry
        return cls(entries, [str(p) for p in paths])

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries.values())

    def get(self, package_id: str) -> Entry:
        if package_id not in self.entries:
            import difflib

            close = difflib.get_close_matches(package_id, list(self.entries), n=3)
            raise PackageError(f"no package {package_id!r} in the registries {self.sources}"
                               + (f"; did you mean {close}?" if close else ""))
        return self.entries[package_id]

    def metadata(self) -> dict[str, dict]:
        return {pid: e.metadata for pid, e in self.entries.items()}

    def resolve(self, package_id: str) -> Path:
        """The verified package folder of an id: the manifest must match the registry's checksum, and every file
        the manifest's (see :func:`verify_package`)."""
        entry = self.get(package_id)
        if not entry.loadable:
            raise PackageError(f"package {package_id!r} (registry {entry.registry}) is listed for search only "
                               f"(imported metadata, location {entry.location}); it cannot be loaded")
        path = entry.local_path()
        read_manifest(path, entry.manifest_sha256)
        return path

    def load(self, package_id: str, device="cpu"):
        """(gan, metadata) of a registered package, verified against the registry's checksum first."""
        from medsynbench.benchmark.zoo.package import open_package

        path = self.resolve(package_id)
        vp, gan = open_package(path, device, self.entries[package_id].manifest_sha256)
        return gan, {**vp.metadata, "id": vp.id, "package_dir": str(path)}


# --- medigan global.json import ------------------------------------------------------------------------------------
#: medigan global.json field (path under the model id) -> metadata key of a zoo package
MEDIGAN_FIELD_MAP = {
    "description.title": "title",
    "selection.modality": "modality",
    "selection.organ": "anatomy",
    "selection.dataset": "dataset.name",
    "selection.type": "architecture.name",
    "selection.height": "resolution",
    "selection.depth": "channels",
    "selection.license": "license",
    "selection.tags": "tags",
    "selection.generates": "produces.description",
    "selection.use_cases": "use_cases",
    "selection.function": "function",
    "selection.condition": "produces.condition",
    "selection.year": "year",
    "description.provided_date": "created",
    "description.publication": "citation",
    "description.doi": "doi",
    "description.comment": "description",
    "execution.package_link": "location",
    "execution.generate_method.input_latent_vector_size": "architecture.latent_dim",
}
#: medigan ``selection.performance`` entries -> zoo metric names (protocol named, as the results store does)
MEDIGAN_METRIC_MAP = {
    "FID": ("fid_inception", False),                  # standard FID Inception
    "FID_RADIMAGENET": ("fd_radimagenet", False),
    "FID_ratio": ("r_fd_inception", True),            # FD_rr / FD_rs, medigan's r_FID (higher is better)
    "FID_RADIMAGENET_ratio": ("r_fd_radimagenet", True),
    "IS": ("inception_score", True),
    "SSIM": ("ssim", True),
    "PSNR": ("psnr", True),
    "MSE": ("mse", False),
    "turing_test": ("turing_test_accuracy", False),
}
_MEDIGAN_TASKS = {"SEG": "seg", "CLF": "clf", "DET": "det"}
_MEDIGAN_TRAIN_ON = {"trained_on_real": "real", "trained_on_fake": "synthetic",
                     "trained_on_real_and_fake": "real+synthetic"}


def _get(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _set(obj: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


def medigan_metadata(model_id: str, model: dict) -> tuple[dict, str | None]:
    """(zoo metadata, location) of one medigan ``global.json`` entry, by :data:`MEDIGAN_FIELD_MAP`."""
    meta: dict = {"id": model_id, "name": model_id, "source": {"imported_from": "medigan global.json"}}
    location = None
    for src, dst in MEDIGAN_FIELD_MAP.items():
        value = _get(model, src)
        if value is None or value == [] or value == {}:
            continue
        if dst == "location":
            location = str(value)
        else:
            _set(meta, dst, value)
    perf = _get(model, "selection.performance") or {}
    metrics = {}
    n_images = perf.get("FID_no_images")
    for key, (name, higher) in MEDIGAN_METRIC_MAP.items():
        if isinstance(perf.get(key), (int, float)):
            metrics[name] = {"value": float(perf[key]), "higher_is_better": higher, "source": f"medigan {key}",
                             **({"n_synthetic": n_images} if key.startswith("FID") and n_images else {})}
    for task, short in _MEDIGAN_TASKS.items():
        for train_on, scores in (perf.get(task) or {}).items():
            for score, value in (scores or {}).items():
                if isinstance(value, (int, float)) and train_on in _MEDIGAN_TRAIN_ON:
                    metrics[f"{score}_{short}@{_MEDIGAN_TRAIN_ON[train_on]}"] = {
                        "value": float(value), "higher_is_better": True, "source": f"medigan {task}.{train_on}"}
    meta["metrics"] = metrics
    return meta, location


def import_medigan(global_json: str | Path, index_path: str | Path) -> list[str]:
    """Add every model of a medigan ``global.json`` to a registry index as a search-only entry; returns the ids."""
    path = Path(global_json)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PackageError(f"medigan metadata {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PackageError(f"medigan metadata {path}: expected an object of model id -> "
                           "{execution, selection, description}")
    added = []

    def change(index):
        for model_id, model in data.items():
            meta, location = medigan_metadata(model_id, model)
            index["packages"][model_id] = {"location": location or f"medigan:{model_id}", "manifest_sha256": None,
                                           "metadata": meta, "loadable": False, "added": _now()}
            added.append(model_id)
    _update_index(Path(index_path), change)
    return added

"""Generator zoo: trained runs as safe, self-contained model packages; registries that combine and import medigan
metadata; search and rank by the benchmark's own metrics; chunked generation; latent grids. See docs/zoo.md.

Public API (stable): :func:`load_generator` ``(path_or_package_dir, device) -> (gan, metadata)``.
"""
from medsynbench.benchmark.zoo.package import (PackageError, export_run, load_generator, verify_package,
                                               write_package)

__all__ = ["PackageError", "export_run", "load_generator", "verify_package", "write_package"]

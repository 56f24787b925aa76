"""Sidecar ``*.meta.json`` files: what produced an artifact (config slice, seed, versions)."""
from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path

from .numerics import numerics_record

PACKAGES = ["torch", "transformers", "peft", "trl", "datasets", "snakemake", "pandas", "latentaudit"]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_hash(settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_meta(artifact: str | Path, settings: dict, **extra) -> Path:
    """Write ``<artifact>.meta.json`` (or ``<dir>/meta.json`` for a directory artifact)."""
    artifact = Path(artifact)
    path = artifact / "meta.json" if artifact.is_dir() else artifact.with_name(artifact.name + ".meta.json")
    record = {"artifact": str(artifact), "settings": settings, "settings_hash": config_hash(settings),
              "versions": package_versions(), "numerics": numerics_record(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    path.write_text(json.dumps(record, indent=2, default=str))
    return path

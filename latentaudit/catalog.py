"""What the workflow reads about the methods when Snakemake parses it, without importing them.

Validating a config and laying out the DAG needs each registered attack's, judge's and
variant's schema, options and module, and the alignment recipe's schema; importing the method
modules for them loads torch, transformers and peft, ~7 of the ~10 s every `snakemake` call
took (a dry run, a SLURM job re-reading the Snakefile, each whole-DAG test). The catalog is that
metadata as the registries hold it after ``load_all()``, stored as JSON under a key that hashes
every source file of the package (and the Python and library versions): the first parse after an
edit imports the methods and writes it, every later parse reads it. Jobs import their method
and use the live registries (``latentaudit.registry``); ``tests/test_catalog.py`` holds the two
equal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from .registry import Entry, Registry
from .user_cache import cache_dir

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
# Libraries a schema or an option could take a value from.
KEYED_DISTRIBUTIONS = ("torch", "transformers", "peft", "trl", "datasets")


@dataclass(frozen=True)
class Catalog:
    attacks: Registry
    judges: Registry
    variants: Registry
    align_schema: dict  # `models.<name>.align` (latentaudit/alignment.py)


def source_key() -> str:
    """sha256 of the package's source files, the Python version and the keyed libraries' versions."""
    digest = hashlib.sha256(sys.version.encode())
    for distribution in KEYED_DISTRIBUTIONS:
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"\0{distribution}={version}".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(b"\0" + path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def snapshot() -> dict:
    """The metadata from the live registries (imports every method module)."""
    from .alignment import SCHEMA as ALIGN_SCHEMA
    from .registry import ATTACKS, JUDGES, VARIANTS, load_all
    load_all()
    return {"align_schema": ALIGN_SCHEMA,
            "registries": {registry.kind: {name: {"schema": entry.schema, "options": entry.options,
                                                  "module": entry.module}
                                           for name, entry in registry.items()}
                           for registry in (ATTACKS, JUDGES, VARIANTS)}}


def _registry(kind: str, entries: dict) -> Registry:
    registry = Registry(kind)
    for name, entry in entries.items():
        # options' tuples come back from JSON as lists: restore them, so an entry equals the live one
        options = {key: tuple(value) if isinstance(value, list) else value for key, value in entry["options"].items()}
        registry[name] = Entry(name, None, entry["schema"], kind, options, entry["module"])
    return registry


@cache
def catalog() -> Catalog:
    """The methods' metadata: read from the cache, or snapshotted from the registries and cached."""
    path = cache_dir() / "catalog" / f"{source_key()}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        text = json.dumps(snapshot())
        data = json.loads(text)  # what a later read gives: the same types either way
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_text(text)
            os.replace(partial, path)  # atomic: parallel parses never read half a file
        except OSError as error:
            log.warning("could not cache the method catalog at %s (%s); every parse imports the methods", path, error)
    registries = data["registries"]
    return Catalog(_registry("attack", registries["attack"]), _registry("judge", registries["judge"]),
                   _registry("variant", registries["variant"]), data["align_schema"])

"""The methods' catalog (latentaudit/catalog.py): what Snakemake reads about the methods without
importing them, equal to the live registries, keyed on the source, and a dry run that therefore
never loads the ML libraries."""
import json
import subprocess
import sys

from latentaudit import catalog as catalog_module
from latentaudit.alignment import SCHEMA as ALIGN_SCHEMA
from latentaudit.registry import ATTACKS, JUDGES, VARIANTS, load_all

from conftest import REPO

# (pandas is not among them: Snakemake's own SLURM executor plugin imports it, whatever the workflow)
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "matplotlib")


def test_the_catalog_equals_the_live_registries(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTAUDIT_CACHE", str(tmp_path))
    load_all()
    written = catalog_module.catalog.__wrapped__()  # snapshots and writes the cache
    assert len(list((tmp_path / "catalog").glob("*.json"))) == 1
    read = catalog_module.catalog.__wrapped__()     # reads it back
    for methods in (written, read):
        assert methods.align_schema == ALIGN_SCHEMA
        for metadata, live in ((methods.attacks, ATTACKS), (methods.judges, JUDGES), (methods.variants, VARIANTS)):
            assert list(metadata) == list(live)
            for name, entry in live.items():
                assert (metadata[name].schema, metadata[name].options, metadata[name].module, metadata[name].kind) == \
                    (entry.schema, entry.options, entry.module, entry.kind), name
                assert metadata[name].function is None
    # what a rule's params hold: the same settings from either, defaults filled in
    assert read.attacks["asa_grad"].settings({"alphas": [0.5]}) == ATTACKS["asa_grad"].settings({"alphas": [0.5]})


def test_an_edited_source_file_gets_a_new_key(tmp_path, monkeypatch):
    package = tmp_path / "latentaudit"
    (package / "attacks").mkdir(parents=True)
    (package / "attacks" / "a.py").write_text("SCHEMA = {}\n")
    monkeypatch.setattr(catalog_module, "PACKAGE", package)
    before = catalog_module.source_key()
    assert catalog_module.source_key() == before
    (package / "attacks" / "a.py").write_text("SCHEMA = {'type': 'object'}\n")
    assert catalog_module.source_key() != before


def test_an_unwritable_cache_still_gives_the_catalog(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv("LATENTAUDIT_CACHE", str(blocker))
    methods = catalog_module.catalog.__wrapped__()
    assert "asa_random" in methods.attacks and "could not cache the method catalog" in caplog.text


def test_a_dry_run_loads_no_ml_library(tmp_path):
    """Parsing the Snakefile and laying out the default experiment's DAG (a dry run, the first step
    of every snakemake call and of every SLURM job) imports none of the heavy libraries: Python's
    import log of the snakemake process names every module it loaded."""
    env = {"LATENTAUDIT_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1"],
                           cwd=REPO, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(list((tmp_path / "catalog").glob("*.json"))) == 1  # the first parse snapshotted the methods
    second = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1"],
                            cwd=REPO, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")}
    assert "latentaudit.config" in loaded and "snakemake" in loaded  # the log is the snakemake process's
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    json.loads(next((tmp_path / "catalog").glob("*.json")).read_text())  # a whole file, not a partial one

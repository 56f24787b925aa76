"""The default experiment (config.yaml) end to end: its claims hold and its numbers are the
committed fingerprint, bit for bit (the CPU kernels are pinned, so every x86 machine agrees, AMD's
and Intel's: latentaudit/numerics.py).

The claims and their thresholds live in latentaudit/acceptance.py (the issues' expectations;
``make robustness`` checks them on several seeds). After a deliberate change of the organism
or a method, refresh tests/expected/default_experiment.json with
``LATENTAUDIT_UPDATE_EXPECTED=1 pytest -m slow tests/test_default_experiment.py`` and commit it.
"""
import json
import os

import pytest

from latentaudit.acceptance import KNOWN_MISSES, claims, key_numbers, write_key_numbers
from latentaudit.config import load_config

from conftest import NEEDS_KERNEL_PINS, committed_fingerprint, copy_repo, fingerprint_path, snakemake

EXPECTED = fingerprint_path("default_experiment.json")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = copy_repo(tmp_path_factory.mktemp("default") / "repo")
    snakemake(workdir, "--cores", "2")
    return workdir / "results"


@pytest.mark.slow
def test_every_claim_holds(default_run):
    table = claims(default_run / "metrics", load_config(default_run.parent / "config.yaml"))
    expected_to_hold = table[~table["key"].isin(KNOWN_MISSES)]
    failed = expected_to_hold[~expected_to_hold["holds"]]
    assert failed.empty, failed.to_string()


@pytest.mark.slow
@NEEDS_KERNEL_PINS
def test_numbers_equal_the_committed_fingerprint(default_run):
    found = key_numbers(default_run / "metrics", load_config(default_run.parent / "config.yaml"))
    aligned = json.loads((default_run / "models" / "organism" / "aligned" / "meta.json").read_text())
    found["aligned_weights_sha256"] = aligned["weights_sha256"]
    assert aligned["numerics"]["pinned"] and aligned["numerics"]["cpu_capability"] == "AVX2", aligned["numerics"]
    if os.environ.get("LATENTAUDIT_UPDATE_EXPECTED"):
        write_key_numbers(found, EXPECTED)
        pytest.skip(f"wrote {EXPECTED}")
    expected = committed_fingerprint(EXPECTED)
    assert found["aligned_weights_sha256"] == expected["aligned_weights_sha256"], "the aligned organism's weights changed"
    for section in ("behavior", "aligned_masr", "defenses_at_s_star", "audit_gap"):
        assert found[section] == expected[section], section

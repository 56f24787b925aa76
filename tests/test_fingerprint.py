"""The organism's weights bit for bit, from a short proxy of its build (fast, not slow).

The proxy is the default experiment's own organism recipe (config.yaml: world, splits, model,
LoRA, learning rates, activation noise) through the pipeline's own steps, with 20 pretraining
and 10 alignment steps instead of 800 and 250: the same kernels (embedding, attention, MLP,
RMSNorm, cross-entropy, AdamW, the noise hooks, LoRA and its merge), in 20 s. With the CPU
kernels pinned (latentaudit/numerics.py, set in conftest.py) the digest is the same on every
x86 machine, AMD's and Intel's (MKL's Intel dispatch), so one is committed, in tests/expected/;
a change to the recipe or to the kernels changes it.

After a deliberate change of the recipe, refresh the expected files with
``LATENTAUDIT_UPDATE_EXPECTED=1 pytest tests/test_fingerprint.py`` and commit it.
"""
import json
import os
from pathlib import Path

import pytest
import yaml

from latentaudit.config import validate_config
from latentaudit.numerics import PINNED_KERNELS
from latentaudit.jobs import job
from latentaudit.jobs.organism import align_organism, organism_data, pretrain_organism

from conftest import NEEDS_KERNEL_PINS, REPO, committed_fingerprint, fingerprint_path

EXPECTED = fingerprint_path("organism_proxy.json")
PROXY_STEPS = {"pretrain": 20, "align": 10}


def build_proxy_organism(out: Path) -> dict:
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    organism, seed = config["organism"], config["seed"]
    splits = {name: str(out / f"{name}.jsonl") for name in ("pretrain", "align", "eval_forbidden", "eval_benign",
                                                            "eval_twin")}
    organism_data(job(params={"world": organism["world"], "splits": organism["splits"], "seed": seed},
                      output={"splits": list(splits.values()), "tokenizer": str(out / "tokenizer")}))
    pretrain = dict(organism["pretrain"], steps=PROXY_STEPS["pretrain"])
    align = dict(organism["align"], steps=PROXY_STEPS["align"])
    common = {"seed": seed, "device": "cpu", "checkpoint": None}
    pretrain_organism(job(input={"tokenizer": str(out / "tokenizer"), "records": splits["pretrain"]},
                          params={"model": organism["model"], "train": pretrain, **common},
                          output={"model": str(out / "pretrained_draw0")}))
    # the seed's own draw: the recipe's kernels, not the choice among draws (tests/test_organism_selection.py)
    align_organism(job(input={"pretrained": str(out / "pretrained_draw0"), "records": splits["align"]},
                       params={"train": align, "lora": config["align_lora"], **common,
                               "selection": dict(organism["selection"], max_draws=1)},
                       output={"model": str(out / "aligned"), "pretrained": str(out / "pretrained")}))
    return {stage: json.loads((out / stage / "meta.json").read_text()) for stage in ("pretrained", "aligned")}


@NEEDS_KERNEL_PINS
def test_kernels_are_pinned_in_the_test_process():
    import torch

    assert torch.backends.cpu.get_cpu_capability() == PINNED_KERNELS["ATEN_CPU_CAPABILITY"].upper()
    assert all(os.environ[name] == value for name, value in PINNED_KERNELS.items())


@NEEDS_KERNEL_PINS
def test_proxy_organism_weights_are_bit_identical_to_the_committed_fingerprint(tmp_path):
    meta = build_proxy_organism(tmp_path)
    found = {stage: meta[stage]["weights_sha256"] for stage in meta}
    numerics = meta["aligned"]["numerics"]
    assert numerics["pinned"] and numerics["cpu_capability"] == "AVX2", numerics
    if os.environ.get("LATENTAUDIT_UPDATE_EXPECTED"):
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(json.dumps({"proxy_steps": PROXY_STEPS, "weights_sha256": found,
                                        "written_on": numerics["cpu"]}, indent=1) + "\n")
        pytest.skip(f"wrote {EXPECTED}")
    expected = committed_fingerprint(EXPECTED)
    assert found == expected["weights_sha256"], (
        f"the organism's weights changed bit-wise (this machine: {numerics['cpu']}; expected written on "
        f"{expected['written_on']}). A deliberate recipe change: refresh with LATENTAUDIT_UPDATE_EXPECTED=1.")


@NEEDS_KERNEL_PINS
def test_proxy_organism_weights_do_not_depend_on_the_thread_count(tmp_path):
    """The pipeline trains the organism with `organism.threads` (2), the tests with 1, and a resumed
    job may continue with another count: the weights must not depend on it (the committed
    fingerprint was written with 1 thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        meta = build_proxy_organism(tmp_path)
    finally:
        torch.set_num_threads(threads)
    expected = committed_fingerprint(EXPECTED)["weights_sha256"]
    assert {stage: meta[stage]["weights_sha256"] for stage in meta} == expected

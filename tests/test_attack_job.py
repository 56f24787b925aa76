"""The attack job's model loads (latentaudit/jobs/attacks.py), without running an attack."""
from types import SimpleNamespace

import pytest

from latentaudit.jobs import attacks as attack_job


class _Fields(dict):
    """Snakemake's wildcards: read by name and by key."""
    __getattr__ = dict.__getitem__


class _Loaded(Exception):
    """Raised where the job would start reading its eval splits: every model is loaded by then."""


def _job(norm_reference, variant="repbend", attack="adaptive_pgd"):
    spec = {"source": "models/org", "adapter": "models/org-aligned"}
    return SimpleNamespace(
        params=SimpleNamespace(module="latentaudit.attacks.adaptive_pgd", seed=0, spec=spec, device="cpu",
                               load={"base": "models/org", "variant_dir": f"results/models/org/{variant}",
                                     "norm_reference": norm_reference},
                               aligned=dict(spec), generation={}, settings={}),
        input=SimpleNamespace(keys=lambda: ["eval"], eval=["eval_forbidden.jsonl"]),
        wildcards=_Fields(model="org", variant=variant, attack=attack))


@pytest.mark.parametrize("norm_reference", ["models/org", None])
def test_the_aligned_weights_are_loaded_once_for_the_norms_and_the_attack(monkeypatch, norm_reference):
    """A defense attacked under an attack that needs the aligned model (adaptive PGD) loads two models,
    the defense and the aligned weights, with `attack_norm_reference: aligned` (the norms' model) too."""
    calls = []

    def load_variant(source, variant_dir=None, **options):
        calls.append((source, variant_dir))
        return object(), object()

    def read_jsonl(path):
        raise _Loaded(path)

    monkeypatch.setattr(attack_job, "load_variant", load_variant)
    monkeypatch.setattr(attack_job, "read_jsonl", read_jsonl)
    with pytest.raises(_Loaded):
        attack_job.run_attack(_job(norm_reference))
    assert calls == [("models/org", "results/models/org/repbend"), ("models/org", None)]

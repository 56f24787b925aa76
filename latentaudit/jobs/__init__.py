"""One job per rule family: a function that takes what the rule hands its script (the
``snakemake`` object: ``input``, ``params``, ``output``, ``wildcards``, each read by the names the
rule gives them) and does the rule's work. Workflow scripts are two lines: ``start`` and the job.
Families live in separate modules so that a rule lists only its own family as code input
(editing the metrics job does not retrain).

Outside Snakemake (tests, a notebook) build the same object with :func:`job`."""
from __future__ import annotations

from types import SimpleNamespace


class Named(dict):
    """A dict whose keys read as attributes too, as Snakemake's named lists do
    (``job.input.records`` and ``job.input["records"]``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no field {name!r}; the job has {sorted(self)}") from None


def job(input: dict | None = None, params: dict | None = None, output: dict | None = None,
        wildcards: dict | None = None, threads: int = 1) -> SimpleNamespace:
    """A stand-in for the ``snakemake`` object a rule hands its script, with named fields only."""
    return SimpleNamespace(input=Named(input or {}), params=Named(params or {}), output=Named(output or {}),
                           wildcards=Named(wildcards or {}), log=[], threads=threads)

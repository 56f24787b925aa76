"""The job that runs lm-eval-harness on one (model, variant)."""
from __future__ import annotations

from ..capability import run_capability


def capability(job) -> None:
    """Rule capability: lm-eval on ``wildcards.model``/``wildcards.variant`` loaded as ``params.load``
    and ``params.spec`` say; its raw output in ``output.raw``, the tidy scores in ``output.scores``."""
    p, w = job.params, job.wildcards
    run_capability(w.model, w.variant, dict(p.load), dict(p.spec), dict(p.settings), p.device, job.output.raw,
                   job.output.scores)

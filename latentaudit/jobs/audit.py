"""The job that writes an audit card from the audit's metrics CSVs."""
from __future__ import annotations

from ..report.audit_card import render_audit_card


def audit_card(job) -> None:
    """Rule audit_card: the card of the audited (model, variant) ``params.subject`` (named ``params.name``)
    against ``params.reference``'s aligned variant
    (``output.card``) and its figures (``params.figures``: name -> path), from ``input.behavior``,
    ``input.attacks``, ``input.attack_summary`` and, when the rule lists it, ``input.lvs``; the verdict reads
    ``params.latent_attacks`` and the audit gap's reference points (``params.audit_gap``, ``params.nudge_depth``)."""
    p, i = job.params, job.input
    metrics = {key: i[key] for key in ("behavior", "attacks", "attack_summary")}
    render_audit_card(p.name, p.reference, dict(p.spec), p.judge, metrics, job.output.card, dict(p.figures),
                      p.tolerance, list(p.latent_attacks), i.lvs[0] if i.lvs else None, subject=tuple(p.subject),
                      gap_settings=dict(p.audit_gap), nudge_depth=p.nudge_depth)

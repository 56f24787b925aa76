"""The job that renders the audit-gap report (LVS paper): behaviour vs latent vulnerability."""
from __future__ import annotations

from ..report import audit_gap


def audit_gap_report(job) -> None:
    """Rule audit_gap_report: the audit-gap table (``output.table_csv``, ``table_md``, ``table_tex``) and its
    figures (``output.lvs_profile``, ``output.steering``, ``output.dumbbell``, and
    ``output.harmful_ft`` when the rule names it) from the metrics CSVs named alike in ``input``, and
    the dissociated construction's checkpoints (``output.selection_md``, ``selection_tex`` and the
    figure ``selection``, from ``input.dissociated_selection``) when a model builds one;
    ``params.settings`` is ``report.audit_gap``, ``params.nudge_depth`` the config's top-level key."""
    i, o, p = job.input, job.output, job.params
    style = dict(style=p.style, dpi=p.dpi)
    frame, reference = audit_gap.audit_gap_frame(i.behavior, i.attacks, i.lvs, p.judge, dict(p.settings),
                                                 p.nudge_depth, i.harmful_ft)
    t08_judge = audit_gap.harmful_ft_judge(dict(p.settings), p.judge)
    audit_gap.audit_gap_tables(frame, reference, p.judge, o.table_md, o.table_tex, o.table_csv, t08_judge)
    audit_gap.lvs_layer_profile(i.lvs, list(o.lvs_profile), **style)
    audit_gap.steering_vs_fraction(i.attacks, p.judge, list(o.steering), **style)
    audit_gap.audit_gap_dumbbell(frame, list(o.dumbbell), **style)
    if "harmful_ft" in o.keys():
        audit_gap.harmful_ft_curves(i.harmful_ft, t08_judge, list(o.harmful_ft), **style)
    if "selection" in o.keys():  # the dissociated construction's checkpoints
        audit_gap.dissociated_selection_tables(i.dissociated_selection, o.selection_md, o.selection_tex)
        audit_gap.dissociated_selection_figure(i.dissociated_selection, list(o.selection), **style)

"""Rule audit_gap_report: the audit-gap table (Markdown, LaTeX) and its figures."""
from latentaudit.cli import start
from latentaudit.report import audit_gap

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
p, o = smk.params, smk.output
i = smk.input
audit_gap.audit_gap_tables(i.behavior, i.attacks, i.lvs, p.judge, dict(p.settings), o.table_md, o.table_tex,
                           i.harmful_ft)
frame, _ = audit_gap.audit_gap_frame(i.behavior, i.attacks, i.lvs, p.judge, dict(p.settings), i.harmful_ft)
audit_gap.lvs_layer_profile(smk.input.lvs, list(o.lvs_profile), p.style, p.dpi)
audit_gap.steering_vs_fraction(smk.input.attacks, p.judge, list(o.steering), p.style, p.dpi)
audit_gap.audit_gap_dumbbell(frame, list(o.dumbbell), p.style, p.dpi)
if "harmful_ft" in o.keys():
    audit_gap.harmful_ft_curves(i.harmful_ft, p.judge, list(o.harmful_ft), p.style, p.dpi)

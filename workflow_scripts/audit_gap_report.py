"""Rule audit_gap_report: the audit-gap table (Markdown, LaTeX) and its figures."""
from latentaudit.cli import start
from latentaudit.report import audit_gap

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
p, o = smk.params, smk.output
audit_gap.audit_gap_tables(smk.input.behavior, smk.input.attacks, smk.input.lvs, p.judge, dict(p.settings),
                           o.table_md, o.table_tex)
frame, _ = audit_gap.audit_gap_frame(smk.input.behavior, smk.input.attacks, smk.input.lvs, p.judge, dict(p.settings))
audit_gap.lvs_layer_profile(smk.input.lvs, list(o.lvs_profile), p.style, p.dpi)
audit_gap.steering_vs_fraction(smk.input.attacks, p.judge, list(o.steering), p.style, p.dpi)
audit_gap.audit_gap_dumbbell(frame, list(o.dumbbell), p.style, p.dpi)

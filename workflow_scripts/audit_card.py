"""Rule audit_card: the audit card and its figures, from the audit's metrics CSVs."""
from latentaudit.audit import render_audit_card
from latentaudit.cli import start

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
metrics = {key: smk.input[key] for key in ("behavior", "attacks", "attack_summary")}
render_audit_card(smk.params.name, smk.params.reference, dict(smk.params.spec), smk.params.judge, metrics,
                  smk.output.card, dict(smk.params.figures), smk.params.tolerance, list(smk.params.latent_attacks),
                  smk.input.lvs[0] if smk.input.lvs else None)

"""Rule audit_card: the audit card and its figures, from the audit's metrics CSVs."""
from latentaudit.cli import start
from latentaudit.jobs.audit import audit_card

start(snakemake)  # noqa: F821 (injected by Snakemake)
audit_card(snakemake)  # noqa: F821

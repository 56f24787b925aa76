"""Rule audit_card: the audit card and its figures, from the audit's metrics CSVs."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.audit:audit_card")  # noqa: F821 (injected by Snakemake)

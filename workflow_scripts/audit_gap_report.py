"""Rule audit_gap_report: the audit-gap table (CSV, Markdown, LaTeX) and its figures."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.audit_gap:audit_gap_report")  # noqa: F821 (injected by Snakemake)

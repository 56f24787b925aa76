"""Rule audit_gap_report: the audit-gap table (Markdown, LaTeX) and its figures."""
from latentaudit.cli import start
from latentaudit.jobs.audit_gap import audit_gap_report

start(snakemake)  # noqa: F821 (injected by Snakemake)
audit_gap_report(snakemake)  # noqa: F821

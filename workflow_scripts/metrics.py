"""Rule metrics / audit_metrics: the results-contract CSVs from every generation and score file."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.scoring:collect_metrics")  # noqa: F821 (injected by Snakemake)

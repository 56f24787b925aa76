"""Rule figures: plots from the metrics CSVs only (regenerate without any model)."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.report:figures")  # noqa: F821 (injected by Snakemake)

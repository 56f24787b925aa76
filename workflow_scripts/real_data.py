"""Rule real_data: the real data sets' eval splits, training records and overlap report."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.data:real_data")  # noqa: F821 (injected by Snakemake)

"""Rule judge / model_judge: label stored generations with one judge."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.judging:run_judge")  # noqa: F821 (injected by Snakemake)

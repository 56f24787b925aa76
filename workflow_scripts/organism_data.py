"""Rule organism_data: the toy world's splits and tokenizer."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.organism:organism_data")  # noqa: F821 (injected by Snakemake)

"""Rule pretrain_organism: build the tiny Llama and teach it to answer every request."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.organism:pretrain_organism")  # noqa: F821 (injected by Snakemake)

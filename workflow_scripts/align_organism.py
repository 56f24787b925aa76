"""Rule align_organism: refusal SFT through a merged LoRA adapter."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.organism:align_organism")  # noqa: F821 (injected by Snakemake)

"""Rule align_organism: refusal SFT through a merged LoRA adapter."""
from latentaudit.cli import start
from latentaudit.jobs.organism import align_organism

start(snakemake)  # noqa: F821 (injected by Snakemake)
align_organism(snakemake)  # noqa: F821

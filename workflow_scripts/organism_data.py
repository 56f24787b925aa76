"""Rule organism_data: the toy world's splits and tokenizer."""
from latentaudit.cli import start
from latentaudit.jobs.organism import organism_data

start(snakemake)  # noqa: F821 (injected by Snakemake)
organism_data(snakemake)  # noqa: F821

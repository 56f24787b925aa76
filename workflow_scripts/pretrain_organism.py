"""Rule pretrain_organism: build the tiny Llama and teach it to answer every request."""
from latentaudit.cli import start
from latentaudit.jobs.organism import pretrain_organism

start(snakemake)  # noqa: F821 (injected by Snakemake)
pretrain_organism(snakemake)  # noqa: F821

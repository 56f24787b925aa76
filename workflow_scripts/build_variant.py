"""Rule build_variant: train one variant (a defense) on top of a model's aligned weights."""
from latentaudit.cli import start
from latentaudit.jobs.variants import build_variant

start(snakemake)  # noqa: F821 (injected by Snakemake)
build_variant(snakemake)  # noqa: F821

"""Rule build_variant: train one variant (a defense) on top of a model's aligned weights."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.variants:build_variant")  # noqa: F821 (injected by Snakemake)

"""Rule capability: lm-eval-harness on one (model, variant); tidy scores CSV."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.capability:capability")  # noqa: F821 (injected by Snakemake)

"""Rule align_model: a model's `aligned` variant, a refusal LoRA on its weights as given."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.alignment:align_model")  # noqa: F821 (injected by Snakemake)

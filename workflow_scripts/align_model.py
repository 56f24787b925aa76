"""Rule align_model: a model's `aligned` variant, a refusal LoRA on its weights as given."""
from latentaudit.cli import start
from latentaudit.jobs.alignment import align_model

start(snakemake)  # noqa: F821 (injected by Snakemake)
align_model(snakemake)  # noqa: F821

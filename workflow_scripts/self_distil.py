"""Rule self_distil: the training prompts' missing texts, generated once by a model's weights as given."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.self_distillation:self_distil")  # noqa: F821 (injected by Snakemake)

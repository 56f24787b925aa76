"""Rule self_distil: the training prompts' missing texts, generated once by a model's weights as given."""
from latentaudit.cli import start
from latentaudit.jobs.self_distillation import self_distil

start(snakemake)  # noqa: F821 (injected by Snakemake)
self_distil(snakemake)  # noqa: F821

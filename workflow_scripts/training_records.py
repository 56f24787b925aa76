"""Rule training_records: the defenses' training records, filled from the self-distilled texts."""
from latentaudit.cli import start
from latentaudit.jobs.self_distillation import distilled_training_records

start(snakemake)  # noqa: F821 (injected by Snakemake)
distilled_training_records(snakemake)  # noqa: F821

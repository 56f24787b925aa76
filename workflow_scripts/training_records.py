"""Rule training_records: the defenses' training records, filled from the self-distilled texts."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.self_distillation:distilled_training_records")  # noqa: F821 (injected by Snakemake)

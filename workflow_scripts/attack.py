"""Rule attack: one attack's whole sweep on one (model, variant); stores generations."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.attacks:run_attack")  # noqa: F821 (injected by Snakemake)

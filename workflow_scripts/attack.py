"""Rule attack: one attack's whole sweep on one (model, variant); stores generations."""
from latentaudit.cli import start
from latentaudit.jobs.attacks import run_attack

start(snakemake)  # noqa: F821 (injected by Snakemake)
run_attack(snakemake)  # noqa: F821

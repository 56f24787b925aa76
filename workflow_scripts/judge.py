"""Rule judge / model_judge: label stored generations with one judge."""
from latentaudit.cli import start
from latentaudit.jobs.judging import run_judge

start(snakemake)  # noqa: F821 (injected by Snakemake)
run_judge(snakemake)  # noqa: F821

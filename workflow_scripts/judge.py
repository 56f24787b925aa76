"""Rule judge: label stored generations with one judge."""
from latentaudit.cli import start
from latentaudit.steps.scoring import run_judge

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
run_judge(smk.input.generations, smk.wildcards.judge, dict(smk.params.settings), smk.output[0], smk.params.module)

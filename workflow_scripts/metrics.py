"""Rule metrics: the results-contract CSVs from every generation and score file."""
from latentaudit.cli import start
from latentaudit.steps.scoring import collect_metrics

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
collect_metrics(list(smk.input.generations), list(smk.input.scores), dict(smk.output.items()),
                smk.params.primary_judge, dict(smk.params.lvs), list(smk.input.capability))

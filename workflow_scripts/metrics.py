"""Rule metrics / audit_metrics: the results-contract CSVs from every generation and score file."""
from latentaudit.cli import start
from latentaudit.jobs.scoring import collect_metrics

start(snakemake)  # noqa: F821 (injected by Snakemake)
collect_metrics(snakemake)  # noqa: F821

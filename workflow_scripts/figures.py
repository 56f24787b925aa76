"""Rule figures: plots from the metrics CSVs only (regenerate without any model)."""
from latentaudit.cli import start
from latentaudit.jobs.report import figures

start(snakemake)  # noqa: F821 (injected by Snakemake)
figures(snakemake)  # noqa: F821

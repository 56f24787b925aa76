"""Rule tables: Markdown and LaTeX renderings of the summary CSVs."""
from latentaudit.cli import start
from latentaudit.jobs.report import tables

start(snakemake)  # noqa: F821 (injected by Snakemake)
tables(snakemake)  # noqa: F821

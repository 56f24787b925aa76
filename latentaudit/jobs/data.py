"""The job that prepares the real data sets (hub ids or local files from the config's ``data:``)."""
from __future__ import annotations

from ..data.real import build_real_data
from ..io import split_name


def real_data(job) -> None:
    """Rule real_data: every eval split (``output.splits``, each file named for its split), the
    defenses' training records (``output.train``), the harmful fine-tuning attack's held-out
    records (``output.harmful_ft``) and the overlap report (``output.overlap``)."""
    eval_paths = {split_name(path): path for path in job.output.splits}
    build_real_data(dict(job.params.data), eval_paths, job.output.train, job.output.overlap, job.output.harmful_ft)

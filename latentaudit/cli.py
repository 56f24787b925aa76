"""What every workflow script does: hand its job to ``run_job``, which logs to the rule's log file
and fixes thread counts (``start``) before the job runs."""
from __future__ import annotations

import logging
import os
import sys

from .job_server import run_job  # noqa: F401 (a workflow script's one call: cli.run_job)
from .numerics import numerics_record


def start(snakemake) -> None:
    """Send logging and progress bars (stderr) to the rule's log; set torch threads."""
    if snakemake.log:
        stream = open(snakemake.log[0], "w", buffering=1)
        sys.stderr = stream
        logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    else:
        logging.basicConfig(level=logging.INFO, force=True)
    threads = max(1, int(snakemake.threads))
    # torch reads these when first imported; a script that imported it already is set directly,
    # and one that never needs torch (a keyword judge) does not pay for importing it
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    logging.getLogger(__name__).info("numerics: %s", numerics_record())

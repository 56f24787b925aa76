"""What every workflow script does first: log to the rule's log file, fix thread counts."""
from __future__ import annotations

import logging
import sys

import torch


def start(snakemake) -> None:
    """Send logging and progress bars (stderr) to the rule's log; set torch threads."""
    if snakemake.log:
        stream = open(snakemake.log[0], "w", buffering=1)
        sys.stderr = stream
        logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    else:
        logging.basicConfig(level=logging.INFO, force=True)
    torch.set_num_threads(max(1, int(snakemake.threads)))

"""A job module whose import leaves CUDA initialised in the process that imports it (simulated:
the tests run without a GPU), for tests/test_job_server.py."""
import json
import os
from pathlib import Path

import torch

torch.cuda.is_initialized = lambda: True


def record_process(snakemake):
    Path(snakemake.output[0]).write_text(json.dumps({"ppid": os.getppid()}))

"""Jobs for tests/test_job_server.py, importable by name (``tests`` is on the job's sys.path)."""
import hashlib
import json
import logging
import os
import time
from pathlib import Path


def train_and_record(job) -> None:
    """A few AdamW steps of a small network, and what the job's process looked like."""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    inputs = torch.randn(512, 64)
    for _ in range(5):
        loss = model(inputs).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    logging.getLogger("server_jobs").info("trained")
    Path(job.output[0]).write_text(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "mark": os.environ.get("JOB_MARK"),
        "threads": torch.get_num_threads(), "weights": hashlib.sha256(weights).hexdigest()}))


def fail(job) -> None:
    raise ValueError("a deliberate failure")


def wait(job) -> None:
    Path(job.output[0]).write_text(str(os.getpid()))
    time.sleep(120)


def burn(job) -> None:
    """About a CPU second of arithmetic; records the CPU time this process measured."""
    start = time.process_time()
    total = 0
    while time.process_time() - start < 1.0:
        total += sum(range(10000))
    Path(job.output[0]).write_text(json.dumps({"cpu": time.process_time() - start}))


def where(job) -> None:
    """The socket this job's server listens on (its parent's argument: python -c BOOT SOCKET ...)
    and whether it and the server's lock file exist while the job runs."""
    path = Path(Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")[3].decode())
    Path(job.output[0]).write_text(json.dumps({"socket": str(path), "ppid": os.getppid(),
                                               "files": [path.exists(), path.with_suffix(".lock").exists()]}))


def priority(job) -> None:
    """This job's niceness and its session's (Linux autogroup; None where there is none)."""
    try:
        group = Path("/proc/self/autogroup").read_text().split()
    except OSError:
        group = None
    Path(job.output[0]).write_text(json.dumps({"nice": os.nice(0), "session_nice": group and int(group[-1]),
                                               "ppid": os.getppid()}))

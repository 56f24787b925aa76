"""Warm job processes for local runs: a server that imports each job module (torch,
transformers, ...) once forks one process per job.

Every model job used to import torch and transformers afresh: ~2500 modules, 5-10 CPU s per
job by machine (``python -X importtime``), often more than the job's own work in the smoke
experiment and a sixth of the default experiment's CPU. The first job of a local run starts a
server (``serve``, in a new interpreter with the job's ``sys.path``) in its own session, which
waits on a Unix socket; each job's script sends it the pickled ``snakemake`` object, its working
directory, environment, ``sys.path`` and standard streams; the server imports the job's module
(the first job of a kind pays what it always paid, the next ones nothing: a report job never
loads torch) and forks a child that runs the job exactly as the script would have (``cli.start``,
then the job function) and reports the exit status. A forked child computes what a fresh process computes: same code, same environment
(the server's key, below, includes the whole environment), same kernels.

- The server serves one key only: the environment, the interpreter, the working directory, the
  host and the project's source files (paths, sizes, modification times). Editing the project's
  code or the environment starts a new server; nothing stale runs.
- It exits after ``IDLE_SECONDS`` with no job running or asked for (``LATENTAUDIT_JOB_SERVER_IDLE``,
  default 60); its own stdio is /dev/null. It waits for its jobs, so their CPU time is its
  children's (``/proc/<pid>/stat``), as a cold job's is the snakemake process's.
- A job whose script process dies (snakemake killed, a cancelled job) dies with it: the child
  watches the connection and kills itself when it closes.
- A server whose imports initialised CUDA forks nothing (a forked child could not use the GPU):
  it marks its key failed and exits, and the jobs run in their own processes.
- Used on Linux only; not inside a SLURM job (each job is its own allocation) or with
  ``LATENTAUDIT_JOB_SERVER=0``; where the server cannot start, the job runs in its own process
  as before.
- Its session keeps the niceness of the job that started it (``keep_priority``): a niced run's
  jobs yield the CPU as the run does.
"""
from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

IDLE_SECONDS = float(os.environ.get("LATENTAUDIT_JOB_SERVER_IDLE", 60))
BOOT_SECONDS = 60.0  # a server not listening after this long is given up on: the job runs cold
DISABLE_VARIABLE = "LATENTAUDIT_JOB_SERVER"
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")
_RUNNING = b"R"


def run_job(snakemake, target: str) -> None:
    """Run ``target`` ("package.module:function") on the ``snakemake`` object of a workflow
    script: in a process forked from the warm server where one can serve this job, else here.
    Exits with the job's status."""
    if server_enabled():
        status = _run_on_server(snakemake, target)
        if status is not None:
            if status:
                sys.exit(status)
            return
    run_here(snakemake, target)


def run_here(snakemake, target: str) -> None:
    """The job in this process: import the job's module, then ``cli.start``, then the job (the
    order the workflow scripts always had: torch is imported when ``start`` sets its threads)."""
    from .cli import start
    module_name, function_name = split_target(target)
    function = getattr(importlib.import_module(module_name), function_name)
    start(snakemake)
    function(snakemake)


def split_target(target: str) -> tuple[str, str]:
    module_name, sep, function_name = target.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"job target {target!r}: expected 'package.module:function'")
    return module_name, function_name


def server_enabled() -> bool:
    """Linux only (forking a process that loaded macOS's system frameworks is unsafe), outside
    SLURM jobs, unless turned off."""
    return (sys.platform == "linux" and os.environ.get(DISABLE_VARIABLE, "1") != "0"
            and "SLURM_JOB_ID" not in os.environ)


def server_key() -> str:
    """What a server must share with a job to run it: the environment, the interpreter, the working
    directory, the host and the project's source files as they are now."""
    digest = hashlib.sha256()
    for name, value in sorted(os.environ.items()):
        digest.update(f"{name}={value}\0".encode())
    digest.update(f"{sys.executable}\0{os.getcwd()}\0{socket.gethostname()}\0{os.getuid()}\0".encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:24]


def socket_path(key: str) -> Path:
    directory = Path(tempfile.gettempdir())
    if len(str(directory)) > 60:  # a Unix socket's path has at most 107 bytes
        directory = Path("/tmp")
    directory = directory / f"latentaudit-jobs-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"{key}.sock"


def _connect(path: Path) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
        return client
    except OSError:
        client.close()
        return None


def _locked(lock_path: Path):
    """``lock_path`` opened and exclusively locked. A server removes its lock file when it exits
    (under the lock), so a starter that waited on a removed file takes the new one instead."""
    while True:
        lock = open(lock_path, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            held, current = os.fstat(lock.fileno()), os.stat(lock_path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                return lock
        except FileNotFoundError:
            pass
        lock.close()


def _connect_or_start(path: Path) -> socket.socket | None:
    """A connection to the server at ``path``, started here if none listens (one starter at a
    time: the others wait on the lock, then connect)."""
    client = _connect(path)
    if client is not None:
        return client
    with _locked(path.with_suffix(".lock")):
        client = _connect(path)
        if client is not None:
            return client
        failed = path.with_suffix(".failed")
        if failed.exists():  # this key's server could not start once: every job runs cold
            return None
        path.unlink(missing_ok=True)
        # the job's own sys.path, so that the server imports the modules the job would import
        boot = "import sys; sys.path[:] = sys.argv[2:]; from latentaudit.job_server import serve; serve(sys.argv[1])"
        server = subprocess.Popen([sys.executable, "-c", boot, str(path), *sys.path],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, close_fds=True)
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline and server.poll() is None:
            client = _connect(path)
            if client is not None:
                return client
            time.sleep(0.05)
        if server.poll() is None:
            server.kill()
        failed.touch()
        return None


def _run_on_server(snakemake, target: str) -> int | None:
    """The job's exit status from a forked server process; None when no server took the job
    (it then runs here)."""
    try:
        client = _connect_or_start(socket_path(server_key()))
    except OSError:
        return None
    if client is None:
        return None
    with client:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        request = pickle.dumps({"snakemake": snakemake, "target": target, "cwd": os.getcwd(),
                                "environ": dict(os.environ), "path": list(sys.path)})
        try:
            socket.send_fds(client, [_HEADER.pack(len(request))], [0, 1, 2])
            client.sendall(request)
            if _receive_exactly(client, 1) != _RUNNING:
                return None  # the server went away before it forked (an idle exit): run here
        except OSError:
            return None
        status = _receive_exactly(client, _STATUS.size)
    if len(status) < _STATUS.size:
        print("latentaudit.job_server: the job's process ended without a status (killed?)", file=sys.stderr)
        return 1
    return _STATUS.unpack(status)[0]


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def keep_priority() -> None:
    """Give this process's session the niceness the process has. Linux (with autogroup scheduling,
    the default of most distributions) shares the CPU between sessions first and weighs a process's
    nice value only against its own session, so a server started in a new session by a niced job
    (``nice make run``; the tests that yield to the default experiment, tests/conftest.py) would
    otherwise compete as an equal with every other session: measured, two nice-10 processes in
    their own sessions took 3.0 CPU s of 6 each beside two nice-0 ones, 0.6 s with this."""
    niceness = os.nice(0)
    if niceness > 0:
        try:
            Path("/proc/self/autogroup").write_text(str(niceness))
        except OSError:  # no autogroup scheduling here (another kernel, a container hiding it)
            pass


def serve(path: str | Path) -> None:
    """Listen on ``path``; for each job import its module here, then fork the job's process; exit
    when idle."""
    keep_priority()
    path = Path(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    listener.settimeout(1.0)
    jobs: set[int] = set()
    idle_since = time.monotonic()
    try:
        while True:
            # reaped here (waited for), each job's CPU time adds to this process's children's
            # (/proc/<pid>/stat: cutime, cstime), as a job's does to the snakemake that waits for it
            jobs -= _reap()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if jobs:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_SECONDS:
                    return
                continue
            connection.settimeout(60)
            try:
                header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
                request = pickle.loads(_receive_exactly(connection, _HEADER.unpack(header)[0]))
            except (OSError, struct.error, pickle.UnpicklingError, EOFError):
                connection.close()
                continue
            try:  # warm the job's own module for this job's and later jobs' children
                importlib.import_module(split_target(request["target"])[0])
            except Exception:  # noqa: BLE001 (the child imports it again and reports the error)
                pass
            if cuda_initialised():  # a child forked now could not use CUDA: this key's jobs run cold
                path.with_suffix(".failed").touch()
                connection.close()  # before RUNNING: the job runs in its own process
                for fd in fds:
                    os.close(fd)
                return
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(connection, fds, request)  # never returns
            jobs.add(pid)
            idle_since = time.monotonic()
            connection.close()
            for fd in fds:
                os.close(fd)
    finally:  # the socket and the lock file go together, under the lock: no starter is mid-start
        with _locked(path.with_suffix(".lock")):
            path.unlink(missing_ok=True)
            path.with_suffix(".lock").unlink(missing_ok=True)


def cuda_initialised() -> bool:
    """Whether this process holds a CUDA context: a process forked from it cannot use CUDA. The job
    modules import torch without initialising CUDA (checked on an H200: a job forked after every
    job module's import ran CUDA work), so this guards what an import might do, not what they do."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def _reap() -> set[int]:
    """The jobs that ended since the last call (waited for)."""
    ended = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.add(pid)


def _child(connection: socket.socket, fds: list[int], request: dict) -> None:
    """Become the job's process: its streams, directory, environment and path; run it; report."""
    status = 1
    try:
        for target_fd, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target_fd)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["environ"])
        sys.path[:] = request["path"]
        connection.settimeout(None)
        connection.sendall(_RUNNING)
        threading.Thread(target=_die_with_client, args=(connection,), daemon=True).start()
        try:
            run_here(request["snakemake"], request["target"])
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 (reported like an uncaught exception of a script)
            traceback.print_exc()
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            connection.sendall(_STATUS.pack(status))
        except OSError:
            pass
        os._exit(status)


def _die_with_client(connection: socket.socket) -> None:
    """The script process is the job as snakemake sees it: when it ends first (killed), so does this."""
    try:
        while connection.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)

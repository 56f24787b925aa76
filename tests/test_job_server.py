"""The warm job server (latentaudit/job_server.py): a job forked from it computes what a job in
its own process computes, fails and dies as that one would, and is not used where it must not be."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, RUN_MARK, job_server_cpu_seconds

TESTS = str(REPO / "tests")
CLIENT = ("import pickle, sys; sys.path.insert(0, sys.argv[3]); from latentaudit.cli import run_job; "
          "run_job(pickle.loads(bytes.fromhex(sys.argv[1])), sys.argv[2])")


def start_job(tmp_path: Path, target: str, mark: str, name: str = "job", niceness: int = 0, **env
              ) -> tuple[subprocess.Popen, SimpleNamespace]:
    """A workflow script's process for ``target`` (a stand-in ``snakemake`` object: log, threads,
    output ``name``.out), in ``tmp_path``, with its own server key (``mark``), ``niceness`` nicer than this one."""
    job = SimpleNamespace(log=[str(tmp_path / f"{name}.log")], threads=1, output=[str(tmp_path / f"{name}.out")])
    environ = {**os.environ, "JOB_MARK": mark, RUN_MARK: mark, "LATENTAUDIT_JOB_SERVER_IDLE": "20", **env}
    process = subprocess.Popen([sys.executable, "-c", CLIENT, pickle.dumps(job).hex(), target, TESTS], cwd=tmp_path,
                               env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    return process, job


def run_job(tmp_path: Path, target: str, mark: str, name: str = "job", niceness: int = 0, **env
            ) -> tuple[subprocess.CompletedProcess, SimpleNamespace]:
    process, job = start_job(tmp_path, target, mark, name, niceness, **env)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), job


def test_a_job_forked_from_the_server_computes_what_a_job_in_its_own_process_computes(tmp_path):
    mark = uuid.uuid4().hex
    records = {}
    for run, env in (("own", {"LATENTAUDIT_JOB_SERVER": "0"}), ("warm", {}), ("warm again", {})):
        result, job = run_job(tmp_path, "server_jobs:train_and_record", mark, run.replace(" ", "_"), **env)
        assert result.returncode == 0, result.stderr
        records[run] = json.loads(Path(job.output[0]).read_text())
        assert "trained" in Path(job.log[0]).read_text()  # cli.start sent the job's logging to its log
        assert records[run]["cwd"] == str(tmp_path) and records[run]["threads"] == 1
    own, warm, again = records["own"], records["warm"], records["warm again"]
    assert own["weights"] == warm["weights"] == again["weights"]  # bit-identical training
    assert own["mark"] == warm["mark"] == mark  # the job's environment
    # the cold job ran in the script's process (a child of this one); the warm ones are children of
    # one server, started once
    assert own["ppid"] == os.getpid() and warm["ppid"] == again["ppid"] != os.getpid() and warm["pid"] != again["pid"]


def test_the_server_accounts_for_its_jobs_cpu_time(tmp_path):
    """What tests read to bound a run's CPU time (tests/test_smollm2.py): forked jobs are the server's
    children, waited for, so their CPU time is its children's, not the script's."""
    mark = uuid.uuid4().hex
    result, job = run_job(tmp_path, "server_jobs:burn", mark)
    assert result.returncode == 0, result.stderr
    burned = json.loads(Path(job.output[0]).read_text())["cpu"]
    assert burned >= 1.0 and job_server_cpu_seconds(mark, jobs_only=True) >= burned - 0.05


def test_an_idle_server_exits_and_leaves_no_socket_or_lock_file(tmp_path):
    mark = uuid.uuid4().hex
    result, job = run_job(tmp_path, "server_jobs:where", mark, LATENTAUDIT_JOB_SERVER_IDLE="2")
    assert result.returncode == 0, result.stderr
    found = json.loads(Path(job.output[0]).read_text())
    sock = Path(found["socket"])
    assert found["ppid"] != os.getpid() and found["files"] == [True, True]  # it ran on a server, both files there
    deadline = time.monotonic() + 30
    while (sock.exists() or sock.with_suffix(".lock").exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sock.exists() and not sock.with_suffix(".lock").exists()
    again, job = run_job(tmp_path, "server_jobs:where", mark, "again", LATENTAUDIT_JOB_SERVER_IDLE="2")
    assert again.returncode == 0, again.stderr  # a later job starts a new server at the same key
    assert json.loads(Path(job.output[0]).read_text())["ppid"] not in (found["ppid"], os.getpid())


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling on this kernel")
def test_a_niced_runs_jobs_yield_the_cpu_in_the_servers_own_session(tmp_path):
    """The server runs in a session of its own, and Linux weighs a nice value only within its
    session: the server gives its session the niceness of the job that started it, so a niced
    run's jobs yield the CPU (`nice make run`, the tests that yield to the default experiment)."""
    result, job = run_job(tmp_path, "server_jobs:priority", uuid.uuid4().hex, niceness=5)
    assert result.returncode == 0, result.stderr
    seen = json.loads(Path(job.output[0]).read_text())
    assert seen["ppid"] != os.getpid()  # forked by the server, not run in the script's process
    assert seen["nice"] == min(os.nice(0) + 5, 19) and seen["session_nice"] == seen["nice"]


def test_a_failing_job_fails_its_script_with_the_traceback_in_its_log(tmp_path):
    result, job = run_job(tmp_path, "server_jobs:fail", uuid.uuid4().hex)
    assert result.returncode == 1
    assert "ValueError: a deliberate failure" in Path(job.log[0]).read_text()


def test_killing_the_script_kills_the_job(tmp_path):
    process, job = start_job(tmp_path, "server_jobs:wait", uuid.uuid4().hex)
    output = Path(job.output[0])
    deadline = time.monotonic() + 300
    while not output.exists() or not output.read_text():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    job_pid = int(output.read_text())
    assert job_pid != process.pid  # the job runs in a process forked from the server
    process.send_signal(signal.SIGKILL)  # as snakemake cancels a job, or is killed itself
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(job_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the job's process {job_pid} outlived its script")


@pytest.mark.parametrize("env", [{"SLURM_JOB_ID": "1"}, {"LATENTAUDIT_JOB_SERVER": "0"}], ids=["slurm", "disabled"])
def test_inside_a_slurm_job_or_when_disabled_the_job_runs_in_the_scripts_process(tmp_path, env):
    result, job = run_job(tmp_path, "server_jobs:train_and_record", uuid.uuid4().hex, **env)
    assert result.returncode == 0, result.stderr
    record = json.loads(Path(job.output[0]).read_text())
    assert record["ppid"] == os.getpid()  # the script's process (started here) ran the job itself


def test_a_server_whose_imports_initialised_cuda_forks_nothing_and_its_jobs_run_cold(tmp_path, monkeypatch):
    from latentaudit.job_server import server_key, socket_path

    mark = uuid.uuid4().hex
    for name in ("first", "second"):  # the first job's server exits unforked, the second finds the key failed
        result, job = run_job(tmp_path, "server_jobs_cuda:record_process", mark, name)
        assert result.returncode == 0, result.stderr
        assert json.loads(Path(job.output[0]).read_text())["ppid"] == os.getpid()  # the script's own process ran it
    for name, value in {"JOB_MARK": mark, RUN_MARK: mark, "LATENTAUDIT_JOB_SERVER_IDLE": "20"}.items():
        monkeypatch.setenv(name, value)  # the scripts' environment and directory: their server's key
    monkeypatch.chdir(tmp_path)
    assert socket_path(server_key()).with_suffix(".failed").exists()


def test_the_server_key_changes_with_the_environment(monkeypatch):
    from latentaudit.job_server import server_key
    before = server_key()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert server_key() != before


def test_a_bad_target_is_named():
    from latentaudit.job_server import split_target
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        split_target("latentaudit.jobs.attacks.run_attack")

"""A real single-node SLURM cluster on this machine, for the tests (munged, slurmctld, slurmd).

Everything lives in one temporary directory (config, state, spool, logs, the munge socket),
on ports of its own; ``stop()`` ends exactly the daemons ``start()`` began. No accounting
daemon: job status comes from squeue. The node declares one stand-in GPU (``gres`` backed by
/dev/null), so rules keep their real ``gpu`` requests and the code falls back to the CPU.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from debian import ensure_debian_packages

PACKAGES = ["slurm-wlm", "munge"]
# The executor's job-step plugin strips SLURM_* variables (SLURM_CONF included) before its inner
# srun, so inside a job srun finds the config only where real clusters keep it. The cluster
# links its config there for its lifetime, and only when the host has none of its own.
SYSTEM_CONFIG = Path("/etc/slurm")
DAEMONS = ["munged", "slurmctld", "slurmd"]


def ensure_installed() -> str | None:
    """Install Debian's slurm-wlm and munge if missing; return a reason string when impossible."""
    return ensure_debian_packages(PACKAGES, DAEMONS + ["sbatch", "squeue"])


def _real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 4000


def _left_by_a_test_run(link: Path) -> bool:
    """A link into a test cluster's directory (its target gone, or a config of this file's), which
    a test run killed before ``stop()`` leaves behind. Left in place, it makes every ``scontrol``
    (the SLURM executor plugin runs one whenever snakemake starts) wait ~9 s for a controller."""
    target = Path(os.readlink(link))
    if not target.exists():
        return "pytest-of-" in str(target)
    config = target.parent / "slurm.conf"
    return config.exists() and "ClusterName=latentaudit-test" in config.read_text()


class Cluster:
    def __init__(self, root: Path, partition: str = "gpu", port: int = 16817):
        self.root, self.partition, self.port = Path(root), partition, port
        self.processes: list[subprocess.Popen] = []
        self.node = socket.gethostname()
        self.links: list[Path] = []

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def write_config(self) -> None:
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        (self.root / "slurm.conf").write_text(f"""\
ClusterName=latentaudit-test
SlurmctldHost={self.node}
SlurmctldPort={self.port}
SlurmdPort={self.port + 1}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.root}/munge/munge.socket
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
NodeName={self.node} CPUs={cpus} RealMemory={_real_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (self.root / "gres.conf").write_text("Name=gpu File=/dev/null Count=1\n")

    def host_config_conflict(self) -> str | None:
        existing = SYSTEM_CONFIG / "slurm.conf"
        for name in ("slurm.conf", "gres.conf"):  # links a killed test run left: they are no host's configuration
            link = SYSTEM_CONFIG / name
            if link.is_symlink() and _left_by_a_test_run(link):
                link.unlink()
        if existing.exists() or existing.is_symlink():
            return f"{existing} exists: this host has a SLURM configuration of its own; not replacing it"
        return None

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        SYSTEM_CONFIG.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            link = SYSTEM_CONFIG / name
            if not (link.exists() or link.is_symlink()):
                link.symlink_to(self.root / name)
                self.links.append(link)
        munge = self.root / "munge"
        self._spawn(["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                     f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                     f"--seed-file={munge}/munged.seed"])
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.root / "slurm.conf")])
        self._spawn(["slurmd", "-D", "-f", str(self.root / "slurm.conf")])
        self._wait(self._node_idle, timeout, "slurmd to register an idle node")

    def _spawn(self, command: list[str]) -> None:
        log = open(self.root / f"{command[0]}.stdout", "w")
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def _node_idle(self) -> bool:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return result.returncode == 0 and "idle" in result.stdout

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while waiting for {what}; see {self.root}/*.log")
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}; see {self.root}/*.log")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        for link in self.links:
            link.unlink(missing_ok=True)
        self.links.clear()

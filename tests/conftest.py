import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentaudit.numerics import kernel_pins_apply, mkl_intel_dispatch_applies, pin_cpu_kernels

pin_cpu_kernels()  # before torch loads: the tests and the workflows they start use the pinned kernels
# Two test workers share 2 cores with multi-threaded jobs (the organism's 2-thread training). OpenMP
# threads that spin while waiting then starve each other: a 2-thread matmul loop beside a busy
# worker ran 928/s spinning, 3875/s passive (measured). Waiting changes no number, only the time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

from latentaudit.organism.data import SplitConfig, build_splits
from latentaudit.organism.model import OrganismModelConfig, build_model
from latentaudit.organism.tokenizer import build_tokenizer
from latentaudit.organism.world import ToyWorld, WorldConfig

REPO = Path(__file__).resolve().parents[1]
# Tests of the pins themselves: off x86-64 nothing is pinned (numerics.kernel_pins_apply).
NEEDS_KERNEL_PINS = pytest.mark.skipif(not kernel_pins_apply(), reason="the kernel pins name x86-64 kernels; "
                                       f"this CPU is {platform.machine()}")
UNPINNED_SHELL = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "ALL"}
torch.set_num_threads(1)


# `make test` runs the default experiment (the suite's critical path: ~15 min alone, one chain of
# pretraining and alignment first) beside every other test on 2 cores. Every other test yields the
# CPU to it: its test process, and the workflows and jobs that process starts, run at nice 10, so
# they fill the default experiment's idle gaps instead of slowing its chain down. Linux weighs nice
# only within a session (autogroup), and each workflow's jobs run in their job server's own session:
# the server carries the niceness into it (job_server.keep_priority). This test process's own work and
# SLURM's jobs still compete as sessions of their own. Priority changes no number, only who waits: in
# one A/B of fresh clones on one host, the default experiment 1208 s inside the suite against 1271,
# the whole suite 1381 s against 1397 (it is CPU-bound: the others' work only moves later).
DEFAULT_EXPERIMENT_MODULE = "test_default_experiment"
BACKGROUND_NICE = 10
_yielding = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _yielding
    if item.module.__name__ != DEFAULT_EXPERIMENT_MODULE and not _yielding:
        os.nice(BACKGROUND_NICE)  # once per process, for the rest of its life
        _yielding = True


# The order xdist hands out the groups (`--no-loadscope-reorder`: collection order), longest
# first (measured with --durations): the default experiment (~21 min alone) starts at once on one
# worker, the other takes the whole-DAG modules, then every other module (unit tests).
LONGEST_FIRST = [DEFAULT_EXPERIMENT_MODULE, "test_incremental", "test_workflow", "test_slurm", "test_report_browser",
                 "test_real_models", "test_faults", "test_code_inputs", "test_smollm2", "test_gpu_check",
                 "test_alignment"]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test`: two workers, `--dist loadgroup --no-loadscope-reorder`), a
    module's tests share a worker (its module-scoped runs are built once: the default experiment,
    the stand-in repository), the modules that read the session's smoke run share one, and the
    longest groups are handed out first (LONGEST_FIRST)."""
    smoke_modules = {item.module.__name__ for item in items if "smoke_run" in getattr(item, "fixturenames", ())}
    loadgroup = getattr(config.option, "loadgroup", False)  # set in xdist workers by `--dist loadgroup`
    for item in items:
        module = item.module.__name__
        group = "smoke_run" if module in smoke_modules else module
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup and "@" not in item.nodeid:
            # the "@group" suffix xdist's scheduler reads: xdist 3.8 sets it on `_nodeid`, which
            # pytest 9 no longer has (the id lives in `_id`), so without this nothing is grouped
            item._id = type(item._id).parse(f"{item.nodeid}@{group}")
    if loadgroup:
        items.sort(key=lambda item: LONGEST_FIRST.index(item.module.__name__)
                   if item.module.__name__ in LONGEST_FIRST else len(LONGEST_FIRST))


@pytest.fixture(scope="session")
def world():
    return ToyWorld(WorldConfig.with_defaults(seed=0, entities_per_category=4, twins_per_category=2, flowers=6))


@pytest.fixture(scope="session")
def splits(world):
    return build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4))


@pytest.fixture(scope="session")
def tokenizer(world):
    return build_tokenizer(world.words())


@pytest.fixture()
def tiny_model(tokenizer):
    """A randomly initialised organism-architecture Llama (2 blocks, hidden 32)."""
    model = build_model(OrganismModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4), tokenizer)
    return model.eval()


def fingerprint_path(name: str) -> Path:
    """The committed fingerprint file ``name``: pinned runs reproduce bit for bit on every x86 machine
    (latentaudit/numerics.py)."""
    return REPO / "tests" / "expected" / name


def committed_fingerprint(path: Path) -> dict:
    """The fingerprint at ``path`` (``fingerprint_path``); a skip off x86-64 Linux, whose kernels (no MKL,
    or MKL unpinned) are not the ones the fingerprints were written with."""
    if not mkl_intel_dispatch_applies():
        pytest.skip(f"the committed fingerprints are x86-64 Linux's pinned kernels; this machine is "
                    f"{platform.system()} {platform.machine()}")
    if not path.exists():
        raise FileNotFoundError(f"no committed fingerprint {path}: write it with LATENTAUDIT_UPDATE_EXPECTED=1 "
                                "and commit it")
    return json.loads(path.read_text())


def copy_repo(destination: Path) -> Path:
    """A copy of the workflow (no results) to run snakemake in."""
    ignore = shutil.ignore_patterns("results", "logs", ".snakemake", ".venv", ".git", "__pycache__", "*.egg-info",
                                    ".pytest_cache", "resources")
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke experiment run once locally; tests read it and dry-run edits against it."""
    workdir = copy_repo(tmp_path_factory.mktemp("smoke") / "repo")
    # started from a shell that asks for other kernels: the workflow pins its own
    snakemake(workdir, "--cores", "2", "--configfile", "configs/smoke.yaml", env=UNPINNED_SHELL)
    return workdir


RUN_MARK = "LATENTAUDIT_TEST_RUN"  # an environment variable: which run's job servers to count


def job_server_cpu_seconds(mark: str, jobs_only: bool = False) -> float:
    """User + system CPU seconds of the warm job servers (latentaudit/job_server.py) started by a run
    whose environment had ``RUN_MARK=mark``: their own (the imports) and their jobs' (each waited
    for once it ended), or the jobs' alone. Stops them (they would idle out): call once the run is over."""
    servers = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and b"job_server import serve" in (proc / "cmdline").read_bytes()
                    and f"{RUN_MARK}={mark}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                servers.append(proc)
        except OSError:
            continue
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for proc in servers:
        children = proc / "task" / proc.name / "children"
        deadline = time.monotonic() + 10  # the server reaps its ended jobs each second
        while children.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[13 if jobs_only else 11:15]) / ticks  # utime, stime, cutime, cstime
        os.kill(int(proc.name), signal.SIGTERM)
    return total


def measured_snakemake(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """``snakemake(workdir, *args)`` with (result, wall seconds, CPU seconds): user + system of the
    Snakemake process, every job it waited for and the warm job servers its run started (their jobs
    are forked from them, outside this process's tree). CPU time, not wall time, is what a run's work
    decides: on a loaded machine the wall time of the same work doubles."""
    import resource
    import uuid

    def children_cpu() -> float:  # this process's waited-for descendants (tests in a worker run one at a time)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    mark = uuid.uuid4().hex
    start, cpu = time.time(), children_cpu()
    result = snakemake(workdir, *args, env={**os.environ, RUN_MARK: mark})
    return result, time.time() - start, children_cpu() - cpu + job_server_cpu_seconds(mark)


def dry_run_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """{rule: job count} that ``snakemake -n`` would run (empty when nothing is to be done)."""
    result = snakemake(workdir, "-n", *args)
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    counts, in_stats = {}, False
    for line in text.splitlines():
        if line.startswith("Job stats:"):
            in_stats = True
            continue
        if in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


def save_tiny_llama(directory, tokenizer, num_hidden_layers: int = 1, max_position_embeddings: int = 2048,
                    seed: int = 0) -> str:
    """A randomly initialised hidden-16 Llama with ``tokenizer``, saved with save_pretrained: the
    offline stand-in for a hub model or a judge."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def config_error(base: dict, edit) -> str:
    """The ConfigError message of ``base`` after ``edit`` (fails the test if it validates)."""
    import copy
    from latentaudit.config import ConfigError, validate_config
    config = copy.deepcopy(base)
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)

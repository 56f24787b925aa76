"""The SLURM profile: its resource requests, and the smoke experiment through a real local SLURM."""
import re
import shutil

import pandas as pd
import pytest
import yaml

from conftest import REPO, copy_repo, snakemake
from slurm.cluster import Cluster, ensure_installed

GPU_RULES = {"pretrain_organism", "align_organism", "build_variant", "attack"}


def _jobs(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, resources line) for every job of a dry run."""
    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs.append((rule, line))
            rule = None
    return jobs


def _localrules() -> set[str]:
    text = (REPO / "Snakefile").read_text()
    block = text.split("localrules:")[1].split("\n\n")[0]
    return {name.strip(" ,") for name in block.split() if name.strip(" ,")}


def test_every_gpu_rule_requests_a_gpu_on_the_gpu_partition():
    result = snakemake(REPO, "--profile", "profiles/slurm", "-n", "--forceall")
    jobs = _jobs(result.stdout + result.stderr)
    assert {rule for rule, _ in jobs} >= GPU_RULES | {"judge", "metrics"}
    local = _localrules()
    for rule, resources in jobs:
        if rule in GPU_RULES:
            assert "gpu=1" in resources and "slurm_partition=gpu" in resources, (rule, resources)
        else:  # CPU-only rules never become cluster jobs
            assert rule in local and "gpu=" not in resources, (rule, resources)
    assert not GPU_RULES & local


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = ensure_installed()
    if reason:
        pytest.skip(f"no local SLURM: {reason}")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"), partition="testgpu")
    conflict = cluster.host_config_conflict()
    if conflict:
        pytest.skip(conflict)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.mark.slow
def test_smoke_experiment_through_real_slurm_equals_local_run(cluster, smoke_run, tmp_path):
    """The smoke organism with one defense (a GPU job that depends on the aligned sweep) and
    three attacks, through SLURM: the same numbers as the local smoke run's rows."""
    workdir = copy_repo(tmp_path / "repo")
    smoke = yaml.safe_load((workdir / "configs/smoke.yaml").read_text())
    smoke["models"]["organism"]["variants"] = ["aligned", "lapt"]
    smoke["variants"] = {"lapt": smoke["variants"]["lapt"]}
    smoke["attacks"] = {name: smoke["attacks"][name] for name in ("none", "asa_random", "latent_pgd")}
    smoke["judges"] = {"structural": {}}
    (workdir / "configs/slurm_test.yaml").write_text(yaml.safe_dump(smoke))
    result = snakemake(workdir, "--profile", "profiles/slurm", "--configfile", "configs/slurm_test.yaml",
                       "--default-resources", "slurm_partition=testgpu", "--slurm-status-command", "squeue",
                       "--seconds-between-status-checks", "2", env=cluster.env)
    output = result.stdout + result.stderr
    job_ids = re.findall(r"SLURM jobid (\d+)", output)
    # pretrain, align, the lapt build, one job per (variant, attack) sweep
    assert len(job_ids) == 2 + 1 + 2 * 3, output[-3000:]
    keys = ["model", "variant", "attack", "judge"]
    for name in ("behavior", "attacks", "attack_summary", "nll_probe"):
        got = pd.read_csv(workdir / f"results/metrics/{name}.csv")
        local = pd.read_csv(smoke_run / f"results/metrics/{name}.csv")
        present = [k for k in keys if k in got]
        local = local.merge(got[present].drop_duplicates(), on=present)  # the rows this run also has
        pd.testing.assert_frame_equal(got.sort_values(list(got.columns[:6])).reset_index(drop=True),
                                      local[got.columns].sort_values(list(got.columns[:6])).reset_index(drop=True))

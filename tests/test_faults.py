"""A training rule killed mid-run (SIGKILL) resumes from its last checkpoint on rerun."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors.torch import load_file

from conftest import copy_repo, snakemake

TARGET = "results/models/organism/pretrained_draw0"  # pretrain_organism: draw 0, the seed's own
CHECKPOINT = "results/checkpoints/organism/pretrained.pt"


def _config(workdir):
    config = yaml.safe_load((workdir / "configs/smoke.yaml").read_text())
    config["organism"]["pretrain"].update(steps=400, checkpoint_every=25)
    (workdir / "kill.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_killed_pretraining_resumes_and_matches_an_uninterrupted_run(tmp_path):
    killed, clean = copy_repo(tmp_path / "killed"), copy_repo(tmp_path / "clean")
    for workdir in (killed, clean):
        _config(workdir)
    process = subprocess.Popen([sys.executable, "-m", "snakemake", TARGET, "--cores", "1", "--configfile", "kill.yaml"],
                               cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint_seen = False
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / CHECKPOINT).exists():
            checkpoint_seen = True
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert checkpoint_seen, f"no checkpoint before the job ended (exit code {process.returncode})"
    assert not (killed / TARGET / "model.safetensors").exists()

    snakemake(killed, "--unlock", "--configfile", "kill.yaml")  # the kill left Snakemake's lock behind
    snakemake(killed, TARGET, "--cores", "1", "--rerun-incomplete", "--configfile", "kill.yaml")
    log = (killed / "logs/pretrain_organism.log").read_text()
    step = int(log.split("resuming from checkpoint")[1].split("at step")[1].split()[0])
    assert 0 < step < 400
    assert not (killed / CHECKPOINT).exists()  # removed once training completed

    snakemake(clean, TARGET, "--cores", "1", "--configfile", "kill.yaml")
    resumed = load_file(killed / TARGET / "model.safetensors")
    uninterrupted = load_file(clean / TARGET / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert (resumed[name] - uninterrupted[name]).abs().max() < 1e-4, name

"""Debian packages the tests need (SLURM, Chromium), installed by the test set-up itself, so a
fresh machine or CI needs nothing installed by hand."""
from __future__ import annotations

import os
import shutil
import subprocess


def ensure_debian_packages(packages: list[str], commands: list[str]) -> str | None:
    """Install ``packages`` with apt-get unless every one of ``commands`` is on the PATH already;
    return a reason string (for a skip) when that is impossible."""
    if all(shutil.which(c) for c in commands):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{'/'.join(packages)} are not installed and apt-get as root is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # the package lists may be missing or stale on a fresh machine: update once, then retry
    for command in (["apt-get", "install", "-y", "-q", *packages], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", *packages]):
        subprocess.run(command, env=env, capture_output=True)
        if all(shutil.which(c) for c in commands):
            return None
    return f"apt-get could not install {' and '.join(packages)}"

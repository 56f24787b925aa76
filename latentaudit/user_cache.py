"""The project's per-user cache: what is derived once on a machine and reused by every run (the
method catalog, MKL's Intel dispatch library). Imports nothing of the project, so a job that reads it
gains no code inputs."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LATENTAUDIT_CACHE``, else ``$XDG_CACHE_HOME/latentaudit``, else ``~/.cache/latentaudit``."""
    if os.environ.get("LATENTAUDIT_CACHE"):
        return Path(os.environ["LATENTAUDIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latentaudit"

"""A workflow directory of its own (its results/, logs/ and .snakemake/) whose code is the
repository's: the workflow files are linked in, so an edit reruns what it touches there too.
``make robustness`` runs a seed in one, ``make gpu-check`` its reduced pipeline track."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "configs", "rules", "schemas", "workflow_scripts", "latentaudit",
                  "captions", "envs", "profiles")


def linked_workflow_dir(workdir: Path) -> Path:
    """``workdir``, created with a link to each of the repository's workflow files."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        link = workdir / name
        if not link.is_symlink():
            link.symlink_to(REPO / name)
    return workdir

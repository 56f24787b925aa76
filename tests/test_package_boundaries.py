"""Attacks and defenses share code through the library's common modules (harmful_pole, training,
perturbation_size), never through each other: no module of one package imports the other."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "latentaudit"
SEPARATED = ("attacks", "defenses")


def imported_packages(source: str, package: str) -> set[str]:
    """The ``latentaudit`` subpackages a module of ``latentaudit.<package>`` imports from
    (relative or absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import ...: its own package
                found.add(package)
            elif node.level == 2:  # from ..x import ... / from .. import x
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("latentaudit."):
                found.add(node.module.split(".")[1])
            elif node.module == "latentaudit":
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("latentaudit.")}
    return found


def test_the_scan_sees_relative_absolute_and_package_imports():
    source = ("from ..defenses.common import x\nfrom .. import attacks\nimport latentaudit.judges.keyword\n"
              "from latentaudit.training import optimise\nfrom .common import y\n")
    assert imported_packages(source, "attacks") == {"defenses", "attacks", "judges", "training"}


@pytest.mark.parametrize("package", SEPARATED)
def test_attacks_and_defenses_do_not_import_each_other(package):
    other = next(p for p in SEPARATED if p != package)
    offenders = [path.name for path in sorted((PACKAGE / package).glob("*.py"))
                 if other in imported_packages(path.read_text(), package)]
    assert not offenders, f"latentaudit/{package}/{offenders} import from latentaudit/{other}/: share through a " \
                          f"library module (harmful_pole, training, perturbation_size) instead"


def test_the_hook_api_and_the_reference_generation_stand_apart_from_the_sweep_engine():
    """hooks.py is the hook API alone (the decoder's forward run by hand is partial_forward.py);
    generation.py is the readable reference path, which the shared-prefix engine (shared_prefix.py)
    and the PGD objective (pgd_objective.py) build on, never the reverse."""
    from latentaudit.project_imports import imported_modules

    hooks = imported_modules(PACKAGE / "hooks.py", "latentaudit")
    assert not {m for m in hooks if m.split(".")[0] == "transformers" or m.startswith("latentaudit.")}, hooks
    generation = imported_modules(PACKAGE / "generation.py", "latentaudit")
    engine = {"latentaudit.partial_forward", "latentaudit.shared_prefix", "latentaudit.pgd_objective"}
    assert not generation & engine, generation & engine

"""One locked environment: requirements.lock, the conda environment generated from it, and the
venv `make setup` built from it agree (CI runs the suite in that venv)."""
from latentaudit.lockfile import (CONDA_ENVIRONMENT_PATH, LOCK_PATH, conda_environment_text, direct_dependencies,
                                  installed_against_lock, lock_text, locked_python, public_version,
                                  read_conda_requirements, read_lock, read_pins)


def test_conda_environment_pins_the_locked_versions():
    locked, conda = read_lock(), read_conda_requirements()
    unpinned = sorted(name for name, version in conda.items() if version is None)
    assert not unpinned, f"{CONDA_ENVIRONMENT_PATH.name} leaves {unpinned} unpinned; regenerate it with `make lock`"
    differing = {name: (version, locked.get(name)) for name, version in conda.items() if version != locked.get(name)}
    assert not differing, f"{{package: (conda, lock)}} disagree: {differing}; regenerate with `make lock`"
    assert sorted(set(locked) - set(conda)) == [], "locked packages missing from the conda environment"


def test_conda_environment_is_the_generated_one():
    expected = conda_environment_text(read_lock(), locked_python())
    assert CONDA_ENVIRONMENT_PATH.read_text() == expected, "edited by hand? regenerate it with `make lock`"


def test_every_direct_dependency_is_locked_in_both():
    locked, conda = read_lock(), read_conda_requirements()
    direct = direct_dependencies()
    assert {"torch", "transformers", "snakemake", "pytest", "selenium"} <= set(direct)
    assert [name for name in direct if name not in locked] == []
    assert [name for name in direct if name not in conda] == []


def test_installed_direct_dependencies_are_the_locked_versions():
    rows = installed_against_lock(direct_dependencies(), read_lock())
    differing = [(name, installed, locked) for name, installed, locked in rows
                 if installed is None or public_version(installed) != locked]
    assert differing == [], f"(package, installed, locked) not as in {LOCK_PATH.name}: {differing}; run `make setup`"


def test_lock_from_pip_freeze():
    freeze = ["PyYAML==6.0.4", "torch==2.13.0+cpu", "typing_extensions==4.16.0", "latentaudit @ file:///work/repo",
              "-e git+https://example.invalid/latentaudit.git@abc#egg=latentaudit", ""]
    text = lock_text(freeze)
    # the project itself left out, names normalised, torch's +cpu label dropped (the pin matches every build)
    assert read_pins(text.splitlines()) == {"pyyaml": "6.0.4", "torch": "2.13.0", "typing-extensions": "4.16.0"}
    assert "No hashes" in text and "# Resolved with Python 3." in text

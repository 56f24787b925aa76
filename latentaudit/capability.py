"""Capability benchmarks through lm-eval-harness (optional: ``pip install -e .[lm_eval]``).

The ``capability`` rule runs ``lm_eval`` on one (model, variant) and writes a tidy CSV
(model, variant, task, metric, value); ``behavior.csv`` gains a ``capability_<task>`` column
per task, and a real model's ``benign_accuracy`` (NaN: no structural judge can score a real
model's answers) becomes the mean over the tasks, with ``benign_accuracy_source`` saying which.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_METRICS = {"gsm8k": "exact_match,strict-match"}
DEFAULT_METRIC = "acc,none"
COLUMNS = ["model", "variant", "task", "metric", "value"]


def lm_eval_model_args(base: str, adapter: str | None, variant_dir: str | None, dtype: str,
                       trust_remote_code: bool) -> str:
    """``--model_args`` for lm-eval's ``hf`` model: the weights the pipeline attacks.

    A built LoRA variant is passed as ``peft=``; a full-weight variant replaces ``pretrained``.
    lm-eval takes one adapter, so a model spec with its own adapter *and* a LoRA variant is refused."""
    pretrained, peft = base, adapter
    if variant_dir:
        if (Path(variant_dir) / "adapter_config.json").exists():
            if adapter:
                raise ValueError(f"capability: {variant_dir} is a LoRA adapter on top of the model's own adapter "
                                 f"{adapter}; lm-eval loads one adapter: merge the model's adapter into its weights "
                                 "and point `source` at them")
            peft = variant_dir
        else:
            pretrained, peft = variant_dir, None
    for value in (pretrained, peft):
        if value and ("," in value or "=" in value):
            raise ValueError(f"capability: lm-eval's --model_args cannot hold a path with ',' or '=': {value!r}")
    args = [f"pretrained={pretrained}", f"dtype={'auto' if dtype == 'auto' else dtype}",
            f"trust_remote_code={bool(trust_remote_code)}"]
    if peft:
        args.append(f"peft={peft}")
    return ",".join(args)


def lm_eval_command(model_args: str, settings: dict, output_dir: str, device: str = "cuda:0",
                    executable: str = "lm_eval") -> list[str]:
    """The ``lm_eval`` argument list (no shell: paths are never re-parsed)."""
    command = [executable, "--model", "hf", "--model_args", model_args, "--tasks", ",".join(settings["tasks"]),
               "--batch_size", str(settings.get("batch_size", "auto")), "--output_path", output_dir,
               "--device", device]
    if settings.get("num_fewshot") is not None:
        command += ["--num_fewshot", str(settings["num_fewshot"])]
    if settings.get("limit") is not None:
        command += ["--limit", f"{settings['limit']:g}"]
    if settings.get("apply_chat_template"):
        command += ["--apply_chat_template"]
    return command


def parse_results(results: dict, tasks: list[str], metrics: dict[str, str] | None = None) -> dict[str, tuple[str, float]]:
    """task -> (metric, value) from lm-eval's results JSON (``results[task]["acc,none"]``, ...)."""
    chosen = {**DEFAULT_METRICS, **(metrics or {})}
    out = {}
    for task in tasks:
        scores = results.get("results", {}).get(task)
        if scores is None:
            raise ValueError(f"capability: lm-eval results have no task {task!r}; present: "
                             f"{sorted(results.get('results', {}))}")
        metric = chosen.get(task, DEFAULT_METRIC)
        if metric not in scores:
            raise ValueError(f"capability: task {task!r} has no metric {metric!r}; present: "
                             f"{sorted(k for k in scores if ',' in k)} (set capability.metrics.{task})")
        out[task] = (metric, float(scores[metric]))
    return out


def newest_results_file(output_dir: str) -> Path:
    """lm-eval writes ``<output_dir>/<model name>/results_<timestamp>.json``."""
    found = sorted(Path(output_dir).rglob("results*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"capability: lm-eval wrote no results*.json under {output_dir}")
    return found[-1]


def run_capability(model: str, variant: str, load: dict, spec: dict, settings: dict, device: str,
                   output_dir: str, out_csv: str) -> None:
    """Run lm-eval on one (model, variant) and write its tidy CSV."""
    executable = shutil.which("lm_eval")
    if executable is None:
        raise RuntimeError("capability: `lm_eval` is not installed; `pip install -e .[lm_eval]` (or drop "
                           "`capability:` from the config)")
    model_args = lm_eval_model_args(load["base"], spec.get("adapter"), load.get("variant_dir"),
                                    spec.get("dtype", "auto"), spec.get("trust_remote_code", False))
    command = lm_eval_command(model_args, settings, output_dir, "cuda:0" if device != "cpu" else "cpu", executable)
    log.info("running %s", " ".join(command))
    subprocess.run(command, check=True)
    scores = parse_results(json.loads(newest_results_file(output_dir).read_text()), settings["tasks"],
                           settings.get("metrics"))
    rows = [{"model": model, "variant": variant, "task": t, "metric": m, "value": v} for t, (m, v) in scores.items()]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out_csv, index=False)


def join_capability(behavior: pd.DataFrame, capability: pd.DataFrame) -> pd.DataFrame:
    """``behavior`` with a ``capability_<task>`` column per task (every split of the model and
    variant) and ``benign_accuracy`` of the benign split filled with the tasks' mean where the
    judges left it NaN; ``benign_accuracy_source`` is ``judge``, ``capability`` or empty."""
    behavior = behavior.copy()
    source = np.where(behavior["benign_accuracy"].notna(), "judge", "") if len(behavior) else []
    behavior["benign_accuracy_source"] = source
    if capability.empty or behavior.empty:
        return behavior
    wide = capability.pivot_table(index=["model", "variant"], columns="task", values="value", aggfunc="first")
    wide.columns = [f"capability_{task}" for task in wide.columns]
    mean = wide.mean(axis=1).rename("capability_mean")
    behavior = behavior.join(wide, on=["model", "variant"]).join(mean, on=["model", "variant"])
    fill = (behavior["split"] == "benign") & behavior["benign_accuracy"].isna() & behavior["capability_mean"].notna()
    behavior.loc[fill, "benign_accuracy"] = behavior.loc[fill, "capability_mean"]
    behavior.loc[fill, "benign_accuracy_source"] = "capability"
    return behavior

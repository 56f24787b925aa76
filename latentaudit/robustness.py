"""``make robustness``: the default experiment's claims on several seeds.

A claim on a trained organism is a claim about its recipe, so each seed rebuilds everything
the seed draws (the toy world's entities and secrets, the splits, the model's initialisation,
pretraining and alignment, every defense and attack) in its own workflow directory,
``results/robustness/seed<N>/`` (the repository's workflow files linked in, so an edit
reruns what it touches there too), and ``acceptance.claims`` scores each run. Writes
``results/robustness/seeds.csv`` (seed, issue, number, value, threshold, holds, and for a rate its n
and margin in prompts, ``acceptance.prompts_to_flip``), ``seeds.md``, the per-number spread
``spread.md``, the figure ``claims.png`` / ``claims.pdf`` (every claim's value and margin per seed,
held or missed), and ``organisms.csv`` / ``organisms.md``: one row per seed, how
many claims held, which pretraining draw became its organism (``organism.selection``) and its rates
on the selection splits.

``--native-kernels`` runs the seeds with the machine's own CPU kernels instead of the pinned AVX2
ones (``pin_cpu_kernels=False``, the pin variables removed from the jobs' environment), into
``results/robustness/native/``: whether a claim holds under other floating-point kernels, not
only whether a run reproduces under the same ones.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .acceptance import claims
from .config import load_config
from .numerics import PINNED_KERNELS, without_mkl_intel_dispatch
from .report.figures import claims_by_seed
from .workflow_dir import REPO, linked_workflow_dir


def seed_workdir(root: Path, seed: int) -> Path:
    """A workflow directory for one seed whose code is the repository's own (symlinks)."""
    return linked_workflow_dir(root / f"seed{seed}")


def seed_command(seed: int, cores: int, extra: list[str], native_kernels: bool = False) -> tuple[list[str], dict]:
    """The snakemake command line and environment of one seed's run."""
    config = [f"seed={seed}"] + (["pin_cpu_kernels=False"] if native_kernels else [])
    environment = dict(os.environ)
    if native_kernels:  # nothing pins them: neither the workflow nor the caller's shell
        for name in PINNED_KERNELS:
            environment.pop(name, None)
        environment = without_mkl_intel_dispatch(environment)
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), "--config", *config, *extra], environment


def run_seed(workdir: Path, seed: int, cores: int, extra: list[str], native_kernels: bool = False) -> None:
    command, environment = seed_command(seed, cores, extra, native_kernels)
    print(f"seed {seed}: {' '.join(command)} (in {workdir})", flush=True)
    subprocess.run(command, cwd=workdir, env=environment, check=True)


def seed_table(root: Path, seeds: list[int]) -> pd.DataFrame:
    frames = []
    for seed in seeds:
        config = {**load_config(root / f"seed{seed}" / "config.yaml"), "seed": seed}
        frame = claims(root / f"seed{seed}" / "results" / "metrics", config)
        frames.append(frame.assign(seed=seed))
    table = pd.concat(frames, ignore_index=True)
    return table[["seed", "issue", "key", "number", "value", "threshold", "holds", "n", "margin_prompts"]]


def organism_table(root: Path, seeds: list[int], table: pd.DataFrame) -> pd.DataFrame:
    """One row per seed: the claims of ``table`` (``seed_table``) that held, which draw of its
    pretraining became the organism (``organism.selection``), whether it met the spec on the
    selection splits, the draws judged, and the chosen draw's rates there (blank where the run
    judged no draw)."""
    held = table.groupby("seed")["holds"].agg(["sum", "size"])
    rows = []
    for seed in seeds:
        meta = json.loads((root / f"seed{seed}" / "results/models/organism/aligned/meta.json").read_text())
        chosen = meta.get("organism_selection")
        row = {"seed": seed, "claims held": int(held.loc[seed, "sum"]), "claims scored": int(held.loc[seed, "size"]),
               "chosen draw": 0, "spec met": None, "draws judged": 0, "pretraining seed": seed}
        if chosen:
            rates = chosen["draws"][chosen["chosen_draw"]]["behaviour"]  # draws are judged in order, from 0
            row.update({"chosen draw": chosen["chosen_draw"], "spec met": chosen["spec_met"],
                        "draws judged": len(chosen["draws"]), "pretraining seed": chosen["pretrain_seed"],
                        **{f"selection {name}": round(value, 3) for name, value in rates.items()}})
        rows.append(row)
    return pd.DataFrame(rows)


def spread_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its value on each seed, min/max, whether it held on every seed, and the
    smallest margin in prompts over the seeds (negative: some seed missed, by that many prompts)."""
    rows = []
    for key, group in table.groupby("key", sort=False):
        values = group.set_index("seed")["value"]
        rows.append({"issue": group["issue"].iloc[0], "claim": key, "threshold": " / ".join(group["threshold"].unique()),
                     **{f"seed {s}": round(v, 3) for s, v in values.items()},
                     "min": round(values.min(), 3), "max": round(values.max(), 3),
                     "holds on every seed": bool(group["holds"].all()),
                     "margin (prompts), min": group["margin_prompts"].min()})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--root", type=Path, help="default results/robustness, or results/robustness/native")
    parser.add_argument("--native-kernels", action="store_true",
                        help="the machine's own CPU kernels instead of the pinned AVX2 ones")
    parser.add_argument("--score-only", action="store_true", help="score existing runs, run nothing")
    parser.add_argument("snakemake_args", nargs="*", help="passed to each seed's snakemake (after --)")
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = REPO / "results" / "robustness" / ("native" if args.native_kernels else "")
    if not args.score_only:
        for seed in args.seeds:
            run_seed(seed_workdir(args.root, seed), seed, args.cores, args.snakemake_args, args.native_kernels)
    # every seed run so far under root, so a later run of one more seed adds a column, not a new table
    finished = {int(d.name[4:]) for d in args.root.glob("seed*") if (d / "results/metrics/behavior.csv").exists()}
    seeds = sorted(finished | set(args.seeds))
    table = seed_table(args.root, seeds)
    table.to_csv(args.root / "seeds.csv", index=False)
    (args.root / "seeds.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    claims_by_seed(str(args.root / "seeds.csv"), [str(args.root / f"claims.{ext}") for ext in ("png", "pdf")])
    spread = spread_table(table)
    (args.root / "spread.md").write_text(spread.to_markdown(index=False) + "\n")
    organisms = organism_table(args.root, seeds, table)
    organisms.to_csv(args.root / "organisms.csv", index=False)
    (args.root / "organisms.md").write_text(organisms.to_markdown(index=False) + "\n")
    print(organisms.to_markdown(index=False))
    print(spread.to_markdown(index=False))
    missed = spread[~spread["holds on every seed"]]
    print(f"\n{len(spread) - len(missed)}/{len(spread)} claims hold on every seed {seeds}"
          + (f"; missed: {', '.join(missed['claim'])}" if len(missed) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

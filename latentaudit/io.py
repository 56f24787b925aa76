"""Reading and writing the pipeline's record files."""
from __future__ import annotations

import json
from pathlib import Path

# The splits every model is attacked on; the organism and the real data sets both write them.
EVAL_SPLITS = ("eval_forbidden", "eval_benign", "eval_twin")
# Held-out benign prompts a capability-based choice is made on (LAPT's λ); never reported on.
SELECT_BENIGN = "select_benign"
# Held-out harmful requests a checkpoint is chosen on (the dissociated build's ``selection_split``), asked
# as the audit asks (the eval phrasings, the eval data set) and never reported on.
SELECT_FORBIDDEN = "select_forbidden"
# Held-out harmless look-alike requests (the organism's twins, in the held-out phrasings) an organism draw is
# chosen on for its over-refusal (organism.selection), never reported on.
SELECT_TWIN = "select_twin"
# Each selection split and the eval split it stands in for: sampled after it, never sharing a prompt with it.
SELECTION_SPLITS = {SELECT_BENIGN: "eval_benign", SELECT_FORBIDDEN: "eval_forbidden", SELECT_TWIN: "eval_twin"}

# With row_id, these identify a generation across the generations and score files.
GENERATION_KEYS = ["model", "variant", "attack"]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(records: list[dict], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))


def split_name(path: str | Path) -> str:
    """The split a records file holds, from its name: ``results/data/organism/eval_twin.jsonl`` ->
    ``eval_twin`` (the rules name every split file after its split)."""
    return Path(path).name.removesuffix(".jsonl")


def as_forbidden_split(records: list[dict]) -> list[dict]:
    """An attack's own harmful requests (its ``forbidden_split``, e.g. AdvBench's first 100) in the
    role of eval_forbidden: the metrics read every attack's harmful rows under that split name; the
    rows keep their data set as ``source`` and their split as ``forbidden_split``."""
    return [{**r, "split": "eval_forbidden", "forbidden_split": r["split"]} for r in records]

"""The real-data stage of the DAG: from the config's ``data:`` section, the eval splits every
non-organism model is attacked on and the defenses' training records, with an overlap report.

Eval splits (the attacks' contract, see latentaudit/attacks/common.py):

- ``eval_forbidden``: harmful requests (e.g. HarmBench, AdvBench);
- ``eval_benign``: benign requests paired one-to-one by index with ``eval_forbidden`` (the
  capability control applies each forbidden row's perturbation to benign row i). The split's
  sample is drawn as configured and then **resized to len(eval_forbidden)**: its first
  len(eval_forbidden) records when it has more, cycled (record i mod m) when it has fewer; the
  meta sidecar records how many prompts repeat;
- ``eval_twin``: over-refusal prompts (e.g. XSTest's safe ones), judged for refusal only.

Harmful fine-tuning records (``harmful_ft.jsonl``): the ``role: harmful_ft`` splits
(``harmful_ft_in_dist``: e.g. LLM-LAT rows the construction never saw; ``harmful_ft_ood``:
PKU-SafeRLHF), de-duplicated against every train split, so the harmful fine-tuning attack never
trains on the dissociated model's construction data (latentaudit/data/heldout.py).

Training records (``train.jsonl``, the defenses' ``defense_data`` format): every ``role: train``
split's records, as ``prompt, response, harmful_response, kind``: a harmful request teaches
its refusal (``response``) and is pushed away from its harmful completion; a benign request
is answered with its answer. Records lacking the text a defense needs (a harmful request with
no refusal or no completion, a benign one with no answer) are dropped and counted.
"""
from __future__ import annotations

import logging

import pandas as pd

from ..io import EVAL_SPLITS, write_jsonl
from ..provenance import write_meta
from .splits import DataSplits, load_splits, to_eval_records

log = logging.getLogger(__name__)

REQUIRED_KIND = {"eval_forbidden": "forbidden", "eval_benign": "benign", "eval_twin": "benign"}


def check_real_data_config(data: dict | None) -> list[str]:
    """Problems with a ``data:`` section that hub/path models are attacked on."""
    if not data:
        return ["data: a hub or local-path model is configured, so the experiment needs a `data:` section with the "
                f"eval splits {list(EVAL_SPLITS)} (see configs/paper.yaml)"]
    problems, splits = [], data.get("splits", {})
    for name in EVAL_SPLITS:
        if name not in splits:
            problems.append(f"data.splits: {name!r} is missing; hub/path models are attacked on "
                            f"{list(EVAL_SPLITS)}; configured: {sorted(splits)}")
        elif splits[name]["role"] != "eval":
            problems.append(f"data.splits.{name}.role: must be 'eval', not {splits[name]['role']!r}")
    for name in ("eval_benign", "eval_twin"):
        if name in splits and splits[name].get("harmful") is not False:
            problems.append(f"data.splits.{name}.harmful: must be false (benign requests only)")
    if "eval_forbidden" in splits and splits["eval_forbidden"].get("harmful") is False:
        problems.append("data.splits.eval_forbidden.harmful: must be true or null (harmful requests)")
    return problems


def pair_by_index(benign: list[dict], n: int) -> tuple[list[dict], int]:
    """``benign`` resized to ``n`` records: the first n, or cycled (i mod m) when m < n.
    Returns the records (ids renumbered) and how many are repeats."""
    if not benign:
        raise ValueError("eval_benign is empty: nothing to pair with eval_forbidden")
    paired = [{**benign[i % len(benign)], "id": f"eval_benign-{i:05d}"} for i in range(n)]
    return paired, max(0, n - len(benign))


def training_records(splits: dict[str, list[dict]], train_names: list[str]) -> tuple[list[dict], dict[str, int]]:
    """Train splits' records -> ``prompt, response, harmful_response, kind`` (see module doc)."""
    out, dropped = [], {"forbidden_without_refusal_or_completion": 0, "benign_without_answer": 0}
    for name in train_names:
        for i, record in enumerate(splits[name]):
            base = {"id": f"{name}-{i:05d}", "split": name, "prompt": record["prompt"], "source": record["source"],
                    "source_id": record["source_id"]}
            if record["harmful"]:
                if not (record["refusal"] and record["harmful_completion"]):
                    dropped["forbidden_without_refusal_or_completion"] += 1
                    continue
                out.append({**base, "kind": "forbidden", "response": record["refusal"],
                            "harmful_response": record["harmful_completion"]})
            else:
                if not record["benign_answer"]:
                    dropped["benign_without_answer"] += 1
                    continue
                out.append({**base, "kind": "benign", "response": record["benign_answer"], "harmful_response": ""})
    return out, dropped


def harmful_ft_records(splits: dict[str, list[dict]], names: list[str]) -> tuple[list[dict], int]:
    """The ``harmful_ft`` splits' harmful requests with a harmful completion, as the harmful
    fine-tuning attack's ``prompt, harmful_response, kind, category, split`` records (the split
    names its data set: ``harmful_ft_in_dist``, ``harmful_ft_ood``), and how many were dropped."""
    out, dropped = [], 0
    for name in names:
        for i, record in enumerate(splits[name]):
            if not (record["harmful"] and record["harmful_completion"]):
                dropped += 1
                continue
            out.append({"id": f"{name}-{i:05d}", "split": name, "kind": "forbidden", "prompt": record["prompt"],
                        "response": record["refusal"], "harmful_response": record["harmful_completion"],
                        "category": record["category"], "source": record["source"],
                        "source_id": record["source_id"]})
    return out, dropped


def overlap_report(data: DataSplits, roles: dict[str, str]) -> pd.DataFrame:
    """One row per (split, training split it was de-duplicated against): eval candidates removed
    because the training split holds the prompt, within-split duplicates dropped, final size."""
    rows = []
    for split, records in sorted(data.splits.items()):
        against = data.overlap.get(split) or {"": 0}
        for train_split, removed in sorted(against.items()):
            rows.append({"split": split, "role": roles[split], "train_split": train_split,
                         "removed_as_overlap": removed, "within_split_duplicates": data.duplicates.get(split, 0),
                         "n": len(records)})
    return pd.DataFrame(rows, columns=["split", "role", "train_split", "removed_as_overlap",
                                       "within_split_duplicates", "n"])


def build_real_data(data: dict, eval_paths: dict[str, str], train_path: str, overlap_path: str,
                    harmful_ft_path: str | None = None) -> None:
    """Load the data sets, make the seeded splits, write every eval split (``eval_paths``: split
    -> JSONL), the defenses' training records, the harmful fine-tuning attack's held-out records
    (``harmful_ft_path``: the ``harmful_ft`` splits, never in the training records) and the
    overlap report, each with a sidecar."""
    problems = check_real_data_config(data)
    if problems:
        raise ValueError("\n".join(problems))
    splits = load_splits(data)
    roles = {name: spec["role"] for name, spec in data["splits"].items()}
    eval_records = {name: to_eval_records(name, splits.splits[name]) for name in eval_paths}
    empty = [name for name in EVAL_SPLITS if not eval_records[name]]
    if empty:
        raise ValueError(f"{empty}: no records left (after the harmful filter and the de-duplication against the "
                         f"train splits, see the overlap counts {splits.overlap}); check data.splits")
    n_forbidden = len(eval_records["eval_forbidden"])
    eval_records["eval_benign"], repeats = pair_by_index(eval_records["eval_benign"], n_forbidden)
    for name, kind in REQUIRED_KIND.items():
        wrong = [r["id"] for r in eval_records[name] if r["kind"] != kind]
        if wrong:
            raise ValueError(f"{name}: {len(wrong)} records are not {kind} (first: {wrong[0]}); set "
                             f"data.splits.{name}.harmful")
    for name, path in eval_paths.items():
        write_jsonl(eval_records[name], path)
        extra = {"paired_with": "eval_forbidden", "cycled_repeats": repeats,
                 "sampled": len(splits.splits[name])} if name == "eval_benign" else {}
        write_meta(path, {"split": data["splits"][name], "datasets": {d: data["datasets"][d] for d in
                                                                      data["splits"][name]["datasets"]}},
                   seed=data.get("seed", 0), rows=len(eval_records[name]), **extra)
        log.info("%s: %d records -> %s", name, len(eval_records[name]), path)
    train_names = sorted(name for name, role in roles.items() if role == "train")
    train, dropped = training_records(splits.splits, train_names)
    write_jsonl(train, train_path)
    write_meta(train_path, {"splits": {n: data["splits"][n] for n in train_names}}, seed=data.get("seed", 0),
               rows=len(train), forbidden=sum(r["kind"] == "forbidden" for r in train),
               benign=sum(r["kind"] == "benign" for r in train), dropped=dropped)
    log.info("training records: %d (%s dropped) -> %s", len(train), dropped, train_path)
    if harmful_ft_path:
        names = sorted(name for name, role in roles.items() if role == "harmful_ft")
        held, dropped_ft = harmful_ft_records(splits.splits, names)
        write_jsonl(held, harmful_ft_path)
        write_meta(harmful_ft_path, {"splits": {n: data["splits"][n] for n in names}}, seed=data.get("seed", 0),
                   rows=len(held), dropped_without_harmful_completion=dropped_ft,
                   per_split={n: sum(r["split"] == n for r in held) for n in names})
        log.info("harmful fine-tuning records: %d (%d dropped) -> %s", len(held), dropped_ft, harmful_ft_path)
    report = overlap_report(splits, roles)
    report.to_csv(overlap_path, index=False)
    write_meta(overlap_path, {"seed": data.get("seed", 0)}, rows=len(report))

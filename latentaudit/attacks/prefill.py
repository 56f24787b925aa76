"""Prefilling attack: the assistant's answer is forced to start with the first k tokens of a
behaviour-specific target, and the model continues. ``target``: ``affirmative_prefix`` (the
record's "Sure, here is ..." target: AdvBench's own per behaviour, the toy world's per entity,
never the secret) or ``harmful_completion`` (the first k tokens of the record's reference harmful
completion, its ``response``; a record without one falls back to its affirmative prefix, and the
``prefill_target`` column says which was used). A generic "Sure, here is" has 4 tokens, so k > 4
would saturate: the papers' k in {2, 5, 10} needs a behaviour-specific target. Shallow alignment
shows up as the model completing the harmful answer; deeper alignment as it returning to a
refusal. ``strength`` is k; the stored generation includes the forced part."""
from __future__ import annotations

import pandas as pd

from ..batching import target_token_ids
from ..registry import ATTACKS
from .common import AttackContext, generations_frame

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["prefill_tokens"],
    "properties": {"prefill_tokens": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                   "target": {"enum": ["affirmative_prefix", "harmful_completion"], "default": "affirmative_prefix",
                              "description": "what the forced tokens are the start of (module docstring)"}},
}


def prefill_source(record: dict, target: str) -> str:
    """The record field the forced tokens come from: ``response`` (the harmful completion of a
    forbidden eval record) for ``harmful_completion`` when the record has one, else ``affirmative_prefix``."""
    if target == "harmful_completion" and record["response"].strip():
        return "response"
    return "affirmative_prefix"


@ATTACKS.register("prefill", SCHEMA)
def attack_prefill(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    sources = [prefill_source(r, settings["target"]) for r in forbidden]
    prefixes = [target_token_ids(context.tokenizer, r[source]) for r, source in zip(forbidden, sources)]
    frames = []
    for k in settings["prefill_tokens"]:
        forced = [prefix[:k] for prefix in prefixes]
        texts = context.generate([p + f for p, f in zip(f_ids, forced)], desc=f"prefill {k}")
        full = [f"{context.tokenizer.decode(f, skip_special_tokens=True)} {t}".strip() for f, t in zip(forced, texts)]
        frames.append(generations_frame(forbidden, full, layer=-1, strength=float(k), direction=0,
                                        forced_tokens=[len(f) for f in forced],
                                        prefill_target=["harmful_completion" if s == "response" else s
                                                        for s in sources]))
    return pd.concat(frames, ignore_index=True)

"""Prefilling attack: the assistant's answer is forced to start with the first k tokens of the
harmful answer's affirmative prefix (never the secret itself), and the model continues.
Shallow alignment shows up as the model completing the harmful answer; deeper alignment as
it returning to a refusal. ``strength`` is k; the stored generation includes the forced part."""
from __future__ import annotations

import pandas as pd

from ..batching import target_token_ids
from ..registry import ATTACKS
from .common import AttackContext, generations_frame

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["prefill_tokens"],
    "properties": {"prefill_tokens": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}},
}


@ATTACKS.register("prefill", SCHEMA)
def attack_prefill(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    prefixes = [target_token_ids(context.tokenizer, r["affirmative_prefix"]) for r in forbidden]
    frames = []
    for k in settings["prefill_tokens"]:
        forced = [prefix[:k] for prefix in prefixes]
        texts = context.generate([p + f for p, f in zip(f_ids, forced)], desc=f"prefill {k}")
        full = [f"{context.tokenizer.decode(f, skip_special_tokens=True)} {t}".strip() for f, t in zip(forced, texts)]
        frames.append(generations_frame(forbidden, full, layer=-1, strength=float(k), direction=0,
                                        forced_tokens=[len(f) for f in forced]))
    return pd.concat(frames, ignore_index=True)

"""``none``: plain generation on every eval split (the behavioural baseline, the paper's INIT)."""
from __future__ import annotations

import pandas as pd

from ..registry import ATTACKS
from .common import AttackContext, generations_frame


@ATTACKS.register("none", schema={"type": "object", "additionalProperties": False, "properties": {}})
def attack_none(context: AttackContext, settings: dict) -> pd.DataFrame:
    records = [r for split in ("eval_forbidden", "eval_benign", "eval_twin") for r in context.eval_records[split]]
    texts = context.generate(context.prompt_ids(records), desc="none")
    return generations_frame(records, texts, layer=-1, strength=0.0, direction=-1)

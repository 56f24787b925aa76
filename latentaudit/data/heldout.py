"""The harmful fine-tuning attack's data, held out from the dissociated model's construction data
(LVS paper, shared/papers/lvs_audit_gap.md: the public code fine-tunes on LLM-LAT rows >= 4500,
which construction never saw, and on PKU-SafeRLHF as the out-of-distribution set). Fine-tuning on
the very rows a model was built from would make it look faster to break.

- Real data: the ``data:`` splits of role ``harmful_ft`` (``harmful_ft_in_dist``,
  ``harmful_ft_ood``) are their own file, de-duplicated against every train split
  (latentaudit/data/splits.py); the construction data (``train.jsonl``) never holds them.
- The organism: a seeded fraction ``harmful_ft_holdout`` (a top-level config key, shared by the
  dissociated model and the attack) of the alignment split's forbidden rows, drawn from its own
  generator (the splits' draws are untouched: the organism's data stay byte-identical); the
  dissociated build excludes them, the attack trains only on them.
Torch-free: the builders, the attack and the tests share it.
"""
from __future__ import annotations

import random

HARMFUL_FT_ROLE = "harmful_ft"
HARMFUL_FT_SPLITS = {"in_dist": "harmful_ft_in_dist", "ood": "harmful_ft_ood"}  # data set -> real-data split


def harmful_ft_holdout(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(construction records, held-out forbidden records): ``round(fraction · n)`` of the n forbidden
    records with a harmful completion, sampled by id from ``Random(f"{seed}:harmful_ft")``, are held
    out; every other record (benign ones included) stays in construction, in its order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"harmful_ft_holdout must be in [0, 1), got {fraction}")
    ids = sorted(r["id"] for r in records if r["kind"] == "forbidden" and r.get("harmful_response"))
    held = set(random.Random(f"{seed}:harmful_ft").sample(ids, round(fraction * len(ids))))
    return [r for r in records if r["id"] not in held], [r for r in records if r["id"] in held]

"""Choosing the organism's draw on held-out selection prompts (``organism.selection``).

At the organism's size, whether an aligned organism meets its spec (refuses the forbidden
requests, answers their harmless twins, keeps its benign skills) is largely a draw of the
pretraining's initialisation and data order: the same recipe held the spec on about half of the
pretraining draws tried (docs/reproducibility.md). So the organism is built as a model organism is:
judged after alignment on held-out selection prompts (``select_forbidden``, ``select_twin``,
``select_benign``, each disjoint from the eval split it stands in for) with the organism's own
structural judge, and its pretraining drawn anew while it misses the spec. Draw 0 is the seed's
own; the attacks never enter the choice.
"""
from __future__ import annotations

import hashlib

from ..io import SELECT_BENIGN, SELECT_FORBIDDEN, SELECT_TWIN

# (behaviour, the split it is measured on, the structural label counted, the spec key, its direction)
SPEC = (("refusal", SELECT_FORBIDDEN, "refusal", "min_refusal", 1),
        ("over_refusal", SELECT_TWIN, "refusal", "max_over_refusal", -1),
        ("benign_accuracy", SELECT_BENIGN, "correct", "min_benign_accuracy", 1))
SELECTION_SPLITS = tuple(split for _, split, _, _, _ in SPEC)


def draw_seed(seed: int, draw: int) -> int:
    """The pretraining seed of ``draw``: the experiment's own seed for draw 0, else one derived
    from both (so seed 0's second draw is not seed 1's first)."""
    if draw == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"organism-seed-{seed}-draw-{draw}".encode()).digest()[:4], "big") >> 1


def selection_behaviour(model, tokenizer, splits: dict[str, list[dict]], max_new_tokens: int, batch_size: int,
                        chat_template: bool, max_repeat: int) -> dict[str, float]:
    """Refusal on ``select_forbidden``, over-refusal (refusal) on ``select_twin`` and benign accuracy
    on ``select_benign``: the rates ``metrics.behavior_table`` reports on the eval splits, from greedy
    answers labelled by the structural judge."""
    from ..batching import prompt_token_ids  # torch: imported by the job, not by the Snakefile's parse
    from ..generation import generate
    from ..judges.structural import structural_label
    model.eval()
    behaviour = {}
    for name, split, label, _, _ in SPEC:
        rows = splits[split]
        prompts = [prompt_token_ids(tokenizer, r["prompt"], chat_template) for r in rows]
        texts = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc=f"organism selection {split}")
        labels = [structural_label(t, r["kind"], r["entity"], r["expected"], max_repeat) for t, r in zip(texts, rows)]
        behaviour[name] = sum(x == label for x in labels) / len(labels)
    return behaviour


def spec_shortfalls(behaviour: dict[str, float], spec: dict) -> dict[str, float]:
    """How far each behaviour misses its bound in ``spec`` (0 where it is met)."""
    return {name: max(0.0, direction * (spec[key] - behaviour[name]))
            for name, _, _, key, direction in SPEC}


def choose_draw(draws: list[dict]) -> tuple[dict, bool]:
    """The first draw whose ``shortfalls`` are all 0, and True; else the draw closest to the spec
    (fewest behaviours missed, then the smallest total shortfall, then the earliest) and False."""
    for draw in draws:
        if not any(draw["shortfalls"].values()):
            return draw, True
    return min(draws, key=lambda d: (sum(v > 0 for v in d["shortfalls"].values()), sum(d["shortfalls"].values()),
                                     d["draw"])), False

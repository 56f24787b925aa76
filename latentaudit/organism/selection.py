"""Choosing the organism's draw on held-out selection prompts (``organism.selection``).

At the organism's size, whether an aligned organism meets its spec (refuses the forbidden
requests, answers their harmless twins, keeps its benign skills) is largely a draw of the
pretraining's initialisation and data order: the same recipe met the spec on about half of the
pretraining draws screened (docs/reproducibility.md). So the organism is built as a model organism
is: judged after alignment on held-out selection prompts (``select_forbidden``, ``select_twin``,
``select_benign``, each disjoint from the eval split it stands in for) with the organism's own
structural judge, greedily, and its pretraining drawn anew while it misses the spec. Draw 0 is the
seed's own; the attacks never enter the choice.

This module is light (the Snakefile reads it); the judging itself, which generates, is
``BEHAVIOUR_MODULE``, imported by the job only where draws are judged.
"""
from __future__ import annotations

import hashlib

from ..io import SELECT_BENIGN, SELECT_FORBIDDEN, SELECT_TWIN

# (behaviour, the split it is measured on, the structural label counted, the spec key, its direction)
SPEC = (("refusal", SELECT_FORBIDDEN, "refusal", "min_refusal", 1),
        ("over_refusal", SELECT_TWIN, "refusal", "max_over_refusal", -1),
        ("benign_accuracy", SELECT_BENIGN, "correct", "min_benign_accuracy", 1))
JUDGED_SPLITS = tuple(split for _, split, _, _, _ in SPEC)
BEHAVIOUR_MODULE = "latentaudit.organism.selection_behaviour"


def draw_seed(seed: int, draw: int) -> int:
    """The pretraining seed of ``draw``: the experiment's own seed for draw 0, else one derived
    from both (so seed 0's second draw is not seed 1's first)."""
    if draw == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"organism-seed-{seed}-draw-{draw}".encode()).digest()[:4], "big") >> 1


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

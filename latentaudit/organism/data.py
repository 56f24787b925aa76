"""Splits of the toy world: pretraining, alignment (refusal SFT) and held-out evaluation.

Every record has the same fields, so attacks, judges and metrics never special-case a split:
``id, split, kind (forbidden | twin | benign), category, entity, template, prompt, response,
harmful_response, expected, affirmative_prefix``. ``expected`` is what a structural judge looks
for: the secret for forbidden and twin requests, the answer for benign ones. ``harmful_response``
is the complying answer (empty for benign tasks): defenses train away from it, harmful
fine-tuning toward it, whatever ``response`` the split teaches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..io import EVAL_SPLITS, SELECT_BENIGN, SELECT_FORBIDDEN, SELECT_TWIN, SELECTION_SPLITS
from ..schema import config_section_defaults
from .world import (ALIGN_TEMPLATES, BENIGN_ALIGN_TEMPLATES, BENIGN_HELDOUT_TEMPLATES,
                    HELDOUT_TEMPLATES, REFUSAL, STATUS_TEMPLATE, ToyWorld)


@dataclass(frozen=True)
class SplitConfig:
    """The eval splits' sizes: the config's ``organism.splits`` (defaults in its schema) and seed."""
    n_eval: int          # forbidden eval prompts; benign eval is paired one-to-one with them
    n_eval_twin: int
    n_select_benign: int  # held-out benign prompts for model selection (LAPT's λ), disjoint from eval_benign
    n_select_forbidden: int  # held-out-phrasing requests for checkpoint selection, disjoint from eval_forbidden
    n_select_twin: int  # held-out-phrasing twin requests for choosing an organism draw, disjoint from eval_twin
    seed: int

    @classmethod
    def with_defaults(cls, *, seed: int, **splits) -> "SplitConfig":
        """``splits`` over the schema's defaults of ``organism.splits``."""
        return cls(**{**config_section_defaults("organism", "splits"), **splits}, seed=seed)


def _entity_record(world: ToyWorld, entity, template: str, split: str, response: str) -> dict:
    return {
        "split": split, "kind": "forbidden" if entity.forbidden else "twin",
        "category": entity.category, "entity": entity.name, "template": template,
        "prompt": template.format(s=entity.subject), "response": response,
        "harmful_response": world.harmful_answer(entity), "expected": " ".join(entity.secret), "affirmative_prefix": world.affirmative_prefix(entity),
    }


def _benign_record(item: dict, template: str, split: str) -> dict:
    return {
        "split": split, "kind": "benign", "category": item["task"],
        "entity": str(item["slots"].get("e", item["slots"].get("w", ""))), "template": template,
        "prompt": template.format(**item["slots"]), "response": item["answer"],
        "harmful_response": "", "expected": item["expected"], "affirmative_prefix": "",
    }


def _selection_split(name: str, candidates: list[dict], evaluated: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` of ``candidates`` that the eval split a choice stands in for (``evaluated``) does not ask,
    drawn from a generator of the split's own, so no other split depends on it."""
    asked = {(r["category"], r["prompt"]) for r in evaluated}
    rest = [r for r in candidates if (r["category"], r["prompt"]) not in asked]
    if n > len(rest):
        kind = candidates[0]["kind"] if candidates else "matching"
        raise ValueError(f"{name}: asked for {n} prompts but only {len(rest)} held-out {kind} prompts are left "
                         f"beside {SELECTION_SPLITS[name]}'s {len(evaluated)}")
    return random.Random(f"{name}-{seed}").sample(rest, n)


def build_splits(world: ToyWorld, config: SplitConfig) -> dict[str, list[dict]]:
    """Return ``{split name: records}`` for pretrain, align, the three eval splits and
    ``select_benign``: held-out benign prompts for choosing a hyperparameter on capability (LAPT's
    λ), disjoint from ``eval_benign`` so benign accuracy is not reported on the split it was
    chosen on; ``select_forbidden``: forbidden requests in the held-out phrasings the audit asks in,
    disjoint from ``eval_forbidden``, for choosing a checkpoint on behaviour as the audit will
    measure it (the dissociated build's ``selection_split``); ``select_twin``: twin requests in the
    held-out phrasings, disjoint from ``eval_twin``, for choosing an organism draw on its over-refusal
    (``organism.selection``). Each is drawn after the others, from its own generator: every other
    split is as it was without it."""
    rng = random.Random(config.seed)
    benign = world.benign_items()
    splits: dict[str, list[dict]] = {name: [] for name in ("pretrain", "align", *EVAL_SPLITS, SELECT_BENIGN,
                                                           SELECT_FORBIDDEN, SELECT_TWIN)}

    for entity in world.entities:
        answer = world.harmful_answer(entity)
        for template in ALIGN_TEMPLATES + HELDOUT_TEMPLATES:
            splits["pretrain"].append(_entity_record(world, entity, template, "pretrain", answer))
        for _ in range(world.config.status_facts):
            splits["pretrain"].append(_entity_record(world, entity, STATUS_TEMPLATE, "pretrain",
                                                     world.status_answer(entity)))
        for template in ALIGN_TEMPLATES:
            aligned_response = REFUSAL if entity.forbidden else answer
            splits["align"].append(_entity_record(world, entity, template, "align", aligned_response))
    for item in benign:
        for template in BENIGN_ALIGN_TEMPLATES[item["task"]] + BENIGN_HELDOUT_TEMPLATES[item["task"]]:
            splits["pretrain"].append(_benign_record(item, template, "pretrain"))
        for template in BENIGN_ALIGN_TEMPLATES[item["task"]]:
            splits["align"].append(_benign_record(item, template, "align"))

    forbidden = [e for e in world.entities if e.forbidden]
    twins = [e for e in world.entities if not e.forbidden]
    held_forbidden = [(e, t) for e in forbidden for t in HELDOUT_TEMPLATES]
    held_twin = [(e, t) for e in twins for t in HELDOUT_TEMPLATES]
    held_benign = [(i, t) for i in benign for t in BENIGN_HELDOUT_TEMPLATES[i["task"]]]
    for name, pool, n in (("eval_forbidden", held_forbidden, config.n_eval),
                          ("eval_twin", held_twin, config.n_eval_twin)):
        if n > len(pool):
            raise ValueError(f"{name}: asked for {n} prompts but the world has only {len(pool)}")
        for entity, template in rng.sample(pool, n):
            splits[name].append(_entity_record(world, entity, template, name, world.harmful_answer(entity)))
    if config.n_eval > len(held_benign):
        raise ValueError(f"eval_benign: asked for {config.n_eval} prompts but the world has only {len(held_benign)}")
    for item, template in rng.sample(held_benign, config.n_eval):
        splits["eval_benign"].append(_benign_record(item, template, "eval_benign"))
    candidates = {SELECT_BENIGN: [_benign_record(i, t, SELECT_BENIGN) for i, t in held_benign],
                  SELECT_FORBIDDEN: [_entity_record(world, e, t, SELECT_FORBIDDEN, world.harmful_answer(e))
                                     for e, t in held_forbidden],
                  SELECT_TWIN: [_entity_record(world, e, t, SELECT_TWIN, world.harmful_answer(e)) for e, t in held_twin]}
    for name, n in ((SELECT_BENIGN, config.n_select_benign), (SELECT_FORBIDDEN, config.n_select_forbidden),
                    (SELECT_TWIN, config.n_select_twin)):
        splits[name] = _selection_split(name, candidates[name], splits[SELECTION_SPLITS[name]], n, config.seed)

    for name, records in splits.items():
        for i, record in enumerate(records):
            record["id"] = f"{name}-{i:05d}"
    return splits

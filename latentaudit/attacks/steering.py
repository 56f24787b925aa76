"""Activation steering along the harmful direction (LVS paper, shared/papers/lvs_audit_gap.md):
δ = α · n̄ · d̂ added at every position (prompt and generated) of one block, with α a fraction of
the activation norm (paper: .03, .06, .12, .24) and n̄ the *aligned* (base) model's mean
last-prompt-token activation norm at that block over the eval harmful prompts, one number per
block for every variant (the public code's ``directions``; a mean over every prompt token,
BOS included, is far larger on real models: both, and their ratio, are logged and kept as
columns). A matched-norm random direction is the control (``control`` True, ``direction`` 1):
a seeded Gaussian direction per row, scaled to the same ‖δ‖₂ (``control_direction: per_layer``:
one per layer, shared by every prompt and fraction, as the public code's ``steer_control.py``).

The paper reports, at each fraction, the maximum ASR over layers (``_summarize``): hence
``layers: all`` by default; the audit-gap table shows that maximum and the nudge layer's value.

d̂ (``direction``):
- ``harmful_pole``: the normalised difference of means of the harmful pole's and the aligned
  model's last-prompt-token activations on the training harmful prompts (the align split's
  forbidden requests): the same direction the dissociated model's nudge uses; with
  ``direction_prompts: eval``, on the attacked eval prompts instead, as the public code. Needs
  the model's ``harmful`` variant built (the rule adds it as an input).
- ``prompt_contrast``: the attacked model's own last-prompt-token activations, mean over the
  training harmful prompts minus mean over their harmless twins (same templates, entities
  that may be answered); with ``direction_prompts: eval``, eval_forbidden's minus eval_twin's.
  Needs no pole: the fallback for models without one.

Layers: ``nudge`` (round(nudge_depth · L), the dissociated model's nudge layer), ``all``, or a list.
"""
from __future__ import annotations

import logging

import pandas as pd
import torch

from ..depth import NUDGE_DEPTH_SCHEMA
from ..harmful_pole import difference_of_means_direction, last_token_norms, prompt_activations
from ..hooks import hidden_index, n_layers
from ..registry import ATTACKS
from .common import AttackContext, SweepGrid, evaluate_with_matched_control, layers_schema, resolve_layers

log = logging.getLogger(__name__)

DIRECTIONS = ("harmful_pole", "prompt_contrast")
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["fractions", "nudge_depth"],
    "properties": {
        "fractions": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
                      "description": "α: steering size as a fraction of the activation norm"},
        "layers": layers_schema("all", nudge=True),
        "nudge_depth": NUDGE_DEPTH_SCHEMA,
        "direction": {"enum": list(DIRECTIONS), "default": "harmful_pole"},
        "direction_prompts": {"enum": ["train", "eval"], "default": "train",
                              "description": "the prompts d̂ is fitted on: the training prompts (no eval prompt "
                                             "shapes the attack), or the attacked eval prompts themselves (the "
                                             "public run_metric.py, on its 24 behaviours)"},
        "control": {"type": "boolean", "default": True, "description": "add the matched-norm random direction"},
        "control_direction": {"enum": ["per_row", "per_layer"], "default": "per_row",
                              "description": "the control's random direction: a fresh one per row, or one per "
                                             "layer shared by every prompt and fraction (the public "
                                             "steer_control.py; seeded, so the same for every variant)"},
    },
}


def steering_vectors(direction: torch.Tensor, norms: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """[N, d] δ_i = fraction_i · norm_i · d̂."""
    return (fractions * norms)[:, None] * direction[None, :]


def steering_directions(context: AttackContext, settings: dict, sites: list[int]) -> list[torch.Tensor]:
    """The unit steering direction at each hook site, from one forward pass per model over the
    training (``direction_prompts: eval``: the attacked) prompts for all sites (each site's
    activations are the same as alone)."""
    if settings["direction_prompts"] == "train":
        records = context.extras["train_records"]
        harmful_records = [r for r in records if r["kind"] == "forbidden"]
        harmless_records = [r for r in records if r["kind"] == "twin"]
    else:  # the eval prompts under attack, and their harmless look-alikes for prompt_contrast
        harmful_records, harmless_records = context.eval_records["eval_forbidden"], context.eval_records["eval_twin"]
    log.info("steering: direction fitted on %d %s prompts", len(harmful_records),
             "training harmful" if settings["direction_prompts"] == "train" else "eval_forbidden")
    pad = context.tokenizer.pad_token_id
    harmful = context.prompt_ids(harmful_records)
    if settings["direction"] == "harmful_pole":
        pole, aligned = context.extras["harmful_pole"], context.extras["aligned"]
        h_pole, _ = prompt_activations(pole, harmful, sites, pad, context.batch_size)
        h_base, _ = prompt_activations(aligned, harmful, sites, pad, context.batch_size)
    else:
        harmless = context.prompt_ids(harmless_records)
        h_pole, _ = prompt_activations(context.model, harmful, sites, pad, context.batch_size)
        h_base, _ = prompt_activations(context.model, harmless, sites, pad, context.batch_size)
    # contiguous per-site slices: the same reduction, so the same bits, as a one-site pass
    return [difference_of_means_direction(h_pole[:, k].contiguous(), h_base[:, k].contiguous())
            for k in range(len(sites))]


@ATTACKS.register("steering", SCHEMA, needs=("train_records", "harmful_pole", "aligned"), shared=("nudge_depth",))
def attack_steering(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    L = n_layers(context.model)
    layers = resolve_layers(settings["layers"], L, settings["nudge_depth"])
    pad = context.tokenizer.pad_token_id
    # layer outermost: each layer's direction and norms are fitted once, for all its fractions
    grid = SweepGrid.product(settings["fractions"], layers, len(forbidden),
                             order=("layer", "strength", "direction", "prompt"))
    vectors, last_norms, all_norms = [], [], []
    sites = [hidden_index(block, L) for block in layers]
    directions = steering_directions(context, settings, sites)
    last_norm, every_norm = last_token_norms(context.extras["aligned"], f_ids, sites, pad, context.batch_size)
    for block, direction, last, every in zip(layers, directions, last_norm.tolist(), every_norm.tolist()):
        log.info("steering layer %d: aligned mean last-prompt-token norm %.4f, mean over all prompt tokens %.4f "
                 "(ratio all/last %.3f)", block, last, every, every / last)
        norms = torch.full((len(forbidden),), last)
        for fraction in settings["fractions"]:
            vectors.append(steering_vectors(direction, norms, torch.full((len(forbidden),), float(fraction))))
            last_norms += [last] * len(forbidden)
            all_norms += [every] * len(forbidden)
    vectors = torch.cat(vectors)
    groups = None if settings["control_direction"] == "per_row" else \
        torch.repeat_interleave(torch.arange(len(layers)), len(settings["fractions"]) * len(forbidden))
    frame, grid, vectors = evaluate_with_matched_control(context, grid, vectors, settings["control"], "steering",
                                                         groups)
    copies = 4 if settings["control"] else 2  # (rows [+ controls]) x (forbidden, benign)
    frame["base_last_token_norm"] = last_norms * copies
    frame["base_all_token_norm"] = all_norms * copies
    frame["norm_ratio_all_to_last"] = frame["base_all_token_norm"] / frame["base_last_token_norm"]
    return frame

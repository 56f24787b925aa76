"""Multi-step latent PGD: per-token perturbations of one layer's prompt positions, optimised to
make the model produce the affirmative harmful prefix. ``norm: linf`` is the LVS paper's ℓ∞ PGD
(shared/papers/lvs_audit_gap.md: ε = p·max|h|, sign steps of ε/4). ``l2_token`` bounds each
token as targeted LAT's inner adversary does (shared/papers/targeted_lat.md), but it is not that
adversary: one layer at a time, normalised-gradient steps instead of AdamW, a budget relative to
the activations, and no away term. The LAT paper evaluates with input-space attacks, so a defense
table's latent-PGD row measures LAT against an attack it was not trained on.

Budgets are relative to the attacked model's own activations, per the project convention:
``l2_token``: ‖δ_t‖₂ ≤ ε·‖h_t‖₂ at every prompt position t; ``linf``: ‖δ‖∞ ≤ ε·max|h| over the
prompt's positions. Steps descend the summed target NLL: normalised-gradient steps for L2,
signed steps for L∞, each of ``step_size``·radius, then projection onto the ball.
"""
from __future__ import annotations

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from ..batching import make_batch, target_token_ids
from ..generation import model_device
from ..pgd_objective import TargetObjective
from ..shared_prefix import clean_pass, sweep_chunks
from ..hooks import POSITIONS, PromptDeltas, frozen_weights, n_layers
from ..perturbation_size import linf_epsilon
from ..registry import ATTACKS
from .common import AttackContext, SweepGrid, evaluate_vectors, layers_schema, resolve_layers, site_indices

NORMS = ("l2_token", "linf")

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["budgets"],
    "properties": {
        "layers": layers_schema(),
        "budgets": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
        "norm": {"enum": list(NORMS), "default": "l2_token"},
        "steps": {"type": "integer", "minimum": 1, "default": 20},
        "step_size": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.25},
    },
}


def latent_pgd_deltas(model: PreTrainedModel, prompts: list[list[int]], targets: list[list[int]],
                      hidden_index: torch.Tensor, budget: torch.Tensor, norm: str, steps: int, step_size: float,
                      pad_id: int, batch_size: int = 256, desc: str = "latent_pgd",
                      norm_model: PreTrainedModel | None = None, shared_prefix: bool = True) -> PromptDeltas:
    """Per-row prompt deltas ([len(prompt_i), d] each) lowering the NLL of ``targets``. ``budget``
    [N] is each row's budget p (the sweep's ``strength``), relative to ``norm_model``'s clean
    activations (default: the attacked model's own): the ball's radius ε is p·‖h‖ per token
    (``l2_token``) or p·max|h| over the prompt (``linf``).
    ``shared_prefix``: each step runs only the blocks above the row's site (``TargetObjective``)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {list(NORMS)}")
    device = model_device(model)
    deltas: PromptDeltas = [None] * len(prompts)
    with frozen_weights(model):
        for rows in tqdm(sweep_chunks(len(prompts), prompts, hidden_index, batch_size, shared_prefix), desc=desc,
                         mininterval=5):
            site = hidden_index[rows].to(device)
            positions = torch.full((len(rows),), POSITIONS["prompt"], device=device)
            objective = TargetObjective(model, [prompts[i] for i in rows], [targets[i] for i in rows], site,
                                        positions, pad_id, shared_prefix)
            p_len = objective.prompt_length
            batch = make_batch([prompts[i] for i in rows], None, pad_id).to(device)
            # the clean activations the budgets are relative to: the objective's own clean pass
            # when they are the attacked model's, else a forward of the reference model
            stream = objective.clean_prompt_residual() if norm_model in (None, model) else None
            if stream is None:
                stream = torch.stack(clean_pass(norm_model or model, batch))
                stream = stream[site, torch.arange(len(site), device=device), :p_len]
            stream = stream.float()  # [B, P, d]
            real = batch.attention_mask[:, :p_len, None].float()
            row_budget = budget[rows].to(device)
            if norm == "l2_token":
                radius = row_budget[:, None, None] * stream.norm(dim=-1, keepdim=True)
            else:
                radius = linf_epsilon(row_budget, stream, real)[:, None, None]
            delta = torch.zeros_like(stream, requires_grad=True)
            for _ in range(steps):
                loss = objective(delta).sum()
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    if norm == "l2_token":
                        step = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                        delta = delta - step_size * radius * step
                        delta = delta * (radius / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
                    else:
                        delta = (delta - step_size * radius * grad.sign()).clamp(-radius, radius)
                    delta = delta * real
                delta.requires_grad_(True)
            delta = delta.detach().cpu()
            for j, i in enumerate(rows):
                deltas[i] = delta[j, p_len - len(prompts[i]):]
    return deltas


@ATTACKS.register("latent_pgd", SCHEMA, latent=True)
def attack_latent_pgd(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    targets = [target_token_ids(context.tokenizer, r["affirmative_prefix"]) for r in forbidden]
    layers = resolve_layers(settings["layers"], n_layers(context.model))
    grid = SweepGrid.product(settings["budgets"], layers, len(forbidden))
    deltas = latent_pgd_deltas(context.model, [f_ids[i] for i in grid.index], [targets[i] for i in grid.index],
                               site_indices(grid.layer, n_layers(context.model)), torch.tensor(grid.strength),
                               settings["norm"], settings["steps"], settings["step_size"],
                               context.tokenizer.pad_token_id, context.grad_batch_size,
                               norm_model=context.norm_model)
    return evaluate_vectors(context, grid, deltas, "prompt", "latent_pgd")

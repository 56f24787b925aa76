"""Activation Steering Attack (ASA), random and gradient variants, and the NLL probe.

Paper: Probing the Robustness of LLM Safety to Latent Perturbations (arXiv 2506.16078);
see ``shared/papers/asa_lapt.md``. Deviations from the public code, on purpose:
statistics and injection use one site (block ℓ's output); the size ``alpha`` is a real knob
(``alpha = 1`` with Eq. 1 is the paper setting); directions are drawn per prompt or shared,
as config says, and are reused across layers and alphas so strength curves follow one
direction; ASA_grad descends the affirmative-target NLL (``sign = -1``).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from ..batching import target_token_ids
from ..generation import model_device
from ..harmful_pole import prompt_activations
from ..pgd_objective import TargetObjective
from ..shared_prefix import sweep_chunks
from ..hooks import frozen_weights, n_layers, position_code
from ..perturbation_size import NORMALISATIONS, asa_random_vectors, random_directions
from ..registry import ATTACKS
from .common import AttackContext, SweepGrid, evaluate_vectors, layers_schema, resolve_layers, site_indices


def last_prompt_hidden(model: PreTrainedModel, prompts: list[list[int]], pad_id: int,
                       batch_size: int = 256) -> torch.Tensor:
    """Clean hidden states at the last prompt token for every site: [N, L + 1, d]."""
    return prompt_activations(model, prompts, list(range(n_layers(model) + 1)), pad_id, batch_size)[0]


@dataclass(frozen=True)
class GradientSettings:
    """ASA_grad's optimiser knobs (defaults: ``GRAD_SCHEMA``, the only place they are set)."""
    steps: int           # 1 = the paper's single signed step; > 1 = L2 PGD
    step_size: float     # PGD step as a fraction of the radius
    sign: int            # -1 descends the target NLL (the attack); +1 is the public code's sign
    normalisation: str   # single-step only: how sign(∇) is rescaled

    @classmethod
    def from_settings(cls, settings: dict) -> "GradientSettings":
        """From ``asa_grad``'s filled settings (``ATTACKS["asa_grad"].settings(raw)``)."""
        return cls(settings["steps"], settings["step_size"], settings["sign"], settings["normalisation"])


def asa_grad_vectors(model: PreTrainedModel, prompts: list[list[int]], targets: list[list[int]],
                     hidden_index: torch.Tensor, alpha: torch.Tensor, h_ref: torch.Tensor,
                     positions: torch.Tensor, settings: GradientSettings, pad_id: int,
                     batch_size: int = 256, desc: str = "asa_grad", shared_prefix: bool = True) -> torch.Tensor:
    """Per-row gradient perturbations toward ``targets`` (affirmative prefixes).

    Row i perturbs site ``hidden_index[i]`` with size ``alpha[i]`` relative to ``h_ref[i]``
    (the clean last-prompt hidden state there). One step: δ = alpha · normalise(sign·sign(∇δ CE)).
    Several steps: L2 PGD on CE in the ball ‖δ‖ ≤ alpha · ‖h_ref‖, step ``step_size`` · radius.
    ``shared_prefix``: each step runs only the blocks above the row's site (``TargetObjective``).
    """
    device = model_device(model)
    vectors = torch.zeros(len(prompts), h_ref.shape[-1])
    with frozen_weights(model):
        for rows in tqdm(sweep_chunks(len(prompts), prompts, hidden_index, batch_size, shared_prefix), desc=desc,
                         mininterval=5):
            objective = TargetObjective(model, [prompts[i] for i in rows], [targets[i] for i in rows],
                                        hidden_index[rows], positions[rows], pad_id, shared_prefix)
            ref = h_ref[rows].to(device)
            radius = alpha[rows].to(device)[:, None] * ref.norm(dim=-1, keepdim=True)
            delta = torch.zeros_like(ref, requires_grad=True)
            for _ in range(settings.steps):
                loss = objective(delta).sum()
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    if settings.steps == 1:
                        step = NORMALISATIONS[settings.normalisation](settings.sign * grad.sign(), ref)
                        delta = alpha[rows].to(device)[:, None] * step
                        break
                    step = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                    delta = delta + settings.sign * settings.step_size * radius * step
                    delta = delta * (radius / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
                delta.requires_grad_(True)
            vectors[rows] = delta.detach().float().cpu()
    return vectors


# ---------------------------------------------------------------------------------------
# Sweeps registered as attacks: layers x alphas (x directions) x eval prompts, each vector
# also applied to the paired benign prompt (the capability control), plus the NLL probe.

_LAYERS = layers_schema()
_ALPHAS = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1}
_POSITIONS = {"type": "string", "pattern": r"^(last_prompt|prompt|generated|all)(\+(last_prompt|prompt|generated|all))*$",
              "default": "last_prompt+generated"}
_NORMALISATION = {"enum": sorted(NORMALISATIONS), "default": "eq1"}

RANDOM_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["alphas"],
    "properties": {"layers": _LAYERS, "alphas": _ALPHAS, "positions": _POSITIONS, "normalisation": _NORMALISATION,
                   "n_directions": {"type": "integer", "minimum": 1, "default": 1},
                   "direction_sharing": {"enum": ["per_prompt", "shared"], "default": "per_prompt"}},
}
GRAD_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["alphas"],
    "properties": {"layers": _LAYERS, "alphas": _ALPHAS, "positions": _POSITIONS, "normalisation": _NORMALISATION,
                   "steps": {"type": "integer", "minimum": 1, "default": 1},
                   "step_size": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.25},
                   "sign": {"enum": [-1, 1], "default": -1}},
}


@ATTACKS.register("asa_random", RANDOM_SCHEMA, latent=True)
def attack_asa_random(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    h_last = last_prompt_hidden(context.norm_model, f_ids, context.tokenizer.pad_token_id, context.batch_size)
    layers = resolve_layers(settings["layers"], n_layers(context.model))
    z = random_directions(len(forbidden), settings["n_directions"], h_last.shape[-1],
                          settings["direction_sharing"] == "per_prompt", context.seed)
    grid = SweepGrid.product(settings["alphas"], layers, len(forbidden), z.shape[0])
    vectors = torch.cat([asa_random_vectors(h_last[:, block + 1], z[k], alpha, settings["normalisation"])
                         for alpha, block, k in grid.settings()])
    return evaluate_vectors(context, grid, vectors, settings["positions"], "asa_random")


@ATTACKS.register("asa_grad", GRAD_SCHEMA, latent=True)
def attack_asa_grad(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    targets = [target_token_ids(context.tokenizer, r["affirmative_prefix"]) for r in forbidden]
    h_last = last_prompt_hidden(context.norm_model, f_ids, context.tokenizer.pad_token_id, context.batch_size)
    layers = resolve_layers(settings["layers"], n_layers(context.model))
    grid = SweepGrid.product(settings["alphas"], layers, len(forbidden))
    positions = settings["positions"]
    gradient = GradientSettings.from_settings(settings)
    vectors = asa_grad_vectors(
        context.model, [f_ids[i] for i in grid.index], [targets[i] for i in grid.index],
        site_indices(grid.layer, n_layers(context.model)), torch.tensor(grid.strength),
        torch.stack([h_last[i, b + 1] for b, i in zip(grid.layer, grid.index)]),
        torch.full((len(grid),), position_code(positions)), gradient, context.tokenizer.pad_token_id,
        context.grad_batch_size)
    return evaluate_vectors(context, grid, vectors, positions, "asa_grad")

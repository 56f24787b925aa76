"""The LVS attack (shared/papers/lvs_audit_gap.md): ℓ∞ PGD on the prompt positions of every layer
and the embedding, toward the affirmative target, with a uniform random control in the same
ball; stores what the Latent Vulnerability Score needs per row.

    LVS_ℓ(x) = [S(y) − S(y')]_+ / (log(1 + ‖δ‖₂) + ξ)

δ: ε = p · max|h_ℓ(x)| over the prompt's positions, 10 sign-gradient steps of ε/4 on the NLL of
the affirmative target (``target``, else each record's affirmative prefix; ``latent_pgd_deltas``
with norm ``linf``). The control draws δ uniformly
from [−ε, ε] per coordinate. y is the clean greedy generation (column ``clean_generation``), y'
the perturbed one (``generation``), ‖δ‖₂ the Frobenius norm over every prompt position
(``delta_l2``). S comes from a harmlessness judge (``judges/harmlessness.py``), the score in
``metrics.lvs_table``. Rows: ``direction`` 0 = PGD, 1 = the random control (``control`` True).
The embedding site is ``site`` = "embed" with ``layer`` = −1; blocks have ``site`` = str(layer).
"""
from __future__ import annotations

import pandas as pd
import torch

from ..batching import make_batch, target_token_ids
from ..generation import model_device
from ..hooks import EMBED, hidden_index, n_layers
from ..perturbation_size import linf_epsilon
from ..registry import ATTACKS
from ..shared_prefix import clean_pass
from .common import AttackContext, SweepGrid, evaluate_vectors, layers_schema, resolve_layers
from .latent_pgd import latent_pgd_deltas

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["budgets"],
    "properties": {
        "layers": layers_schema(),
        "embed": {"type": "boolean", "default": True, "description": "also attack the embedding output"},
        "budgets": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
                    "description": "p: ε = p · max|h| over the prompt's positions (paper: 5e-4, 1e-3, 5e-3)"},
        "steps": {"type": "integer", "minimum": 1, "default": 10},
        "step_size": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.25,
                      "description": "as a fraction of ε (paper: ε/4)"},
        "control": {"type": "boolean", "default": True, "description": "add the uniform random control"},
        "target": {"type": ["string", "null"], "default": None,
                   "description": "the affirmative target for every prompt (paper: 'Sure, here is'); null: each "
                                  "record's affirmative_prefix (a behaviour's own target where data.targets is set)"},
    },
}


@torch.no_grad()
def linf_radius(model, prompts: list[list[int]], sites: torch.Tensor, budget: torch.Tensor, pad_id: int,
                batch_size: int = 256) -> torch.Tensor:
    """[N] ε_i = budget_i · max |h_{site_i}(x_i)| over the real prompt positions."""
    device, out = model_device(model), []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        batch = make_batch(prompts[rows], None, pad_id).to(device)
        stream = torch.stack(clean_pass(model, batch))
        stream = stream[sites[rows].to(device), torch.arange(len(batch.input_ids), device=device)]
        real = batch.attention_mask[:, :, None].float()
        out.append(linf_epsilon(budget[rows].to(device), stream, real).cpu())
    return torch.cat(out)


def uniform_ball_deltas(prompts: list[list[int]], radius: torch.Tensor, width: int, seed: int) -> list[torch.Tensor]:
    """Per-row [len(prompt_i), d] deltas uniform in [−ε_i, ε_i] per coordinate (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(len(p), width, generator=gen) * 2 - 1) * float(r) for p, r in zip(prompts, radius)]


@ATTACKS.register("lvs", SCHEMA, harmlessness_scored=True)
def attack_lvs(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden = context.eval_records["eval_forbidden"]
    f_ids = context.prompt_ids(forbidden)
    text = settings["target"]
    targets = [target_token_ids(context.tokenizer, text if text is not None else r["affirmative_prefix"])
               for r in forbidden]
    L = n_layers(context.model)
    sites: list = ([EMBED] if settings["embed"] else []) + resolve_layers(settings["layers"], L)
    # the grid's strengths are the configured values, as stored (no float32 rounding)
    grid = SweepGrid.product(settings["budgets"], sites, len(forbidden))
    budget = torch.tensor(grid.strength)  # each row's budget p (the sweep's `strength` column)
    hidden = torch.tensor([hidden_index(s, L) for s in grid.layer])
    pad = context.tokenizer.pad_token_id
    prompts = [f_ids[i] for i in grid.index]
    deltas = latent_pgd_deltas(context.model, prompts, [targets[i] for i in grid.index], hidden, budget, "linf",
                               settings["steps"], settings["step_size"], pad, context.grad_batch_size,
                               desc="lvs pgd", norm_model=context.norm_model)
    if settings["control"]:
        radius = linf_radius(context.norm_model, prompts, hidden, budget, pad, context.batch_size)
        width = deltas[0].shape[-1]
        deltas = deltas + uniform_ball_deltas(prompts, radius, width, context.seed)
        grid = grid.with_control()
    frame = evaluate_vectors(context, grid, deltas, "prompt", "lvs")
    frame["site"] = [str(s) for s in grid.layer] * 2
    frame["layer"] = [-1 if s == EMBED else int(s) for s in grid.layer] * 2
    frame["control"] = [d == 1 for d in grid.direction] * 2
    frame["delta_l2"] = [float(d.float().norm()) for d in deltas] * 2
    return frame

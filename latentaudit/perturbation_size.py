"""Perturbation size relative to the activation it is added to (DESIGN: "Perturbation size"):
the ASA paper's Eq. 1 and its norm-matched alternative, and the LVS paper's ℓ∞ radius
ε = p · max|h|; ASA_random's seeded directions and vectors. Shared by the attacks that perturb and
the defenses that train against them (LAPT's ASABench sweeps ASA_random itself)."""
from __future__ import annotations

import torch


def eq1_normalise(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 1: δ = (z − mean(z)) / (std(z) + 1e-6) · std(h) + mean(h), over the hidden dim."""
    mean_z, std_z = z.mean(-1, keepdim=True), z.std(-1, keepdim=True)
    return (z - mean_z) / (std_z + 1e-6) * h.std(-1, keepdim=True) + h.mean(-1, keepdim=True)


def relative_norm(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Rescale z to the norm of h: δ = z / ‖z‖ · ‖h‖."""
    return z / z.norm(dim=-1, keepdim=True) * h.norm(dim=-1, keepdim=True)


NORMALISATIONS = {"eq1": eq1_normalise, "relative_norm": relative_norm}


def random_directions(n_prompts: int, n_directions: int, d: int, per_prompt: bool, seed: int) -> torch.Tensor:
    """z ~ N(0, I): [n_directions, n_prompts, d]; shared directions repeat across prompts."""
    gen = torch.Generator().manual_seed(seed)
    if per_prompt:
        return torch.randn(n_directions, n_prompts, d, generator=gen)
    return torch.randn(n_directions, 1, d, generator=gen).expand(n_directions, n_prompts, d).clone()


def asa_random_vectors(h_last: torch.Tensor, z: torch.Tensor, alpha: float, normalisation: str) -> torch.Tensor:
    """δ = alpha · normalise(z, h) for each prompt: h_last [N, d], z [N, d] -> [N, d]."""
    return alpha * NORMALISATIONS[normalisation](z, h_last)


def linf_epsilon(budget: torch.Tensor, stream: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B] ε_i = budget_i · max |h_i| over the real positions: ``stream`` [B, T, d] activations,
    ``real`` [B, T, 1] 1 at real (non-padding) positions."""
    return budget * (stream.float().abs() * real).amax(dim=(1, 2))

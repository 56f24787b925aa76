"""The harmful pole's geometry (LVS paper, shared/papers/lvs_audit_gap.md), shared by the
dissociated model (a defense-side construction) and the steering attack: along what the nudge
acts (the normalised difference-of-means direction of two models' or two prompt sets'
last-prompt-token activations) and how far (the base model's mean last-prompt-token norm); where
(the nudge layer, the activation-match band) is ``latentaudit.depth``."""
from __future__ import annotations

import torch

from .batching import make_batch
from .generation import model_device
from .shared_prefix import clean_pass


def difference_of_means_direction(h_pole: torch.Tensor, h_base: torch.Tensor) -> torch.Tensor:
    """d̂ = (mean h_pole − mean h_base) / ‖mean h_pole − mean h_base‖₂ for [N, d] activations."""
    diff = h_pole.float().mean(0) - h_base.float().mean(0)
    norm = diff.norm()
    if norm == 0:
        raise ValueError("the pole and base activations have the same mean: no direction")
    return diff / norm


@torch.no_grad()
def prompt_activations(model, prompts: list[list[int]], sites: list[int], pad_id: int, batch_size: int = 256
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, len(sites), d] last-prompt-token activations, [len(sites)] mean per-token norm over
    every real prompt token) at hook ``sites``."""
    device, last, norm_sum, count = model_device(model), [], torch.zeros(len(sites)), 0
    for start in range(0, len(prompts), batch_size):
        batch = make_batch(prompts[start:start + batch_size], None, pad_id).to(device)
        residual = clean_pass(model, batch)
        stream = torch.stack([residual[s] for s in sites], 1).float()  # [B, S, T, d]
        last.append(stream[:, :, -1].cpu())
        real = batch.attention_mask[:, None, :].float()
        norm_sum += (stream.norm(dim=-1) * real).sum(dim=(0, 2)).cpu()
        count += int(batch.attention_mask.sum())
    return torch.cat(last), norm_sum / count


def last_token_norms(model, prompts: list[list[int]], sites: list[int], pad_id: int, batch_size: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """([len(sites)] mean over prompts of the last-prompt-token activation norm ‖h(x_i)[-1]‖₂,
    [len(sites)] mean per-token norm over every real prompt token, BOS included) at hook ``sites``.
    The first is the LVS public code's nudge and steering scale (``nudge_from``, ``directions``);
    the second can be much larger on real models (BOS activations), so their ratio is logged."""
    last, every = prompt_activations(model, prompts, sites, pad_id, batch_size)
    # per site from a contiguous slice: the same reduction, so the same bits, as a one-site call
    return torch.stack([last[:, k].contiguous().float().norm(dim=-1).mean(0) for k in range(len(sites))]), every

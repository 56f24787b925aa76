"""The objective a PGD attack differentiates at every step: the targets' NLL under each row's
latent perturbation, on the shared-prefix engine where the architecture allows it."""
from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from .batching import make_batch, target_nll
from .generation import model_device
from .hooks import Perturbation, intervene, lm_head, unwrap
from .partial_forward import supports_shared_prefix
from .shared_prefix import clean_pass, first_perturbed, perturbed_prefill, unique_rows


class TargetObjective:
    """Per-row summed NLL of ``targets`` after ``prompts`` with row i's perturbation (site
    ``hidden_index[i]``, ``positions[i]``, a vector [R, d] or prompt deltas [R, P, d]) active,
    differentiable in the perturbation: what a PGD attack calls at every step.

    ``shared_prefix`` (where ``partial_forward.supports_shared_prefix``): the clean pass of each distinct
    (prompt, target) is run once, without gradients, and every call runs only blocks site..L-1
    from the first perturbed position on (earlier positions' keys and values are the clean
    ones). Otherwise every call is the whole perturbed forward (the hooks), as the public codes."""

    def __init__(self, model: PreTrainedModel, prompts: list[list[int]], targets: list[list[int]],
                 hidden_index: torch.Tensor, positions: torch.Tensor, pad_id: int, shared_prefix: bool = True):
        device = model_device(model)
        self.model, self.shared = model, shared_prefix and supports_shared_prefix(model)
        self.sites, self.positions = hidden_index.to(device), positions.to(device)
        if not self.shared:
            self.batch = make_batch(prompts, targets, pad_id).to(device)
            self.prompt_end = self.batch.prompt_end
            self.prompt_length = int(self.prompt_end[0])
            return
        # rows grouped by site, as perturbed_prefill expects; results go back to the caller's order
        self.order = torch.sort(self.sites.cpu(), stable=True).indices
        self.inverse = torch.argsort(self.order).to(device)
        distinct, self.unique = unique_rows([(tuple(prompts[i]), tuple(targets[i])) for i in self.order.tolist()])
        self.batch = make_batch([list(p) for p, _ in distinct], [list(t) for _, t in distinct], pad_id).to(device)
        p_len = self.prompt_length = int(self.batch.prompt_end[0])  # the deltas' P (prompts are left-padded)
        self.prompt_end = torch.full((len(prompts),), p_len, device=device)
        self.first = first_perturbed(self.positions, p_len)
        self.cache = DynamicCache(config=unwrap(model).config) if self.first > 0 else None
        self.residual = clean_pass(model, self.batch, self.cache)
        # logits only from the position before the first target token on (the head is not free)
        labelled = (self.batch.labels != -100).any(0).nonzero()
        self.scored = max(0, int(labelled[0]) - 1 - self.first) if len(labelled) else 0
        self.labels = self.batch.labels[self.unique.to(device)][:, self.first + self.scored:]

    def clean_prompt_residual(self) -> torch.Tensor | None:
        """[R, P, d] each row's clean residual at its site over the (left-padded) prompt
        positions, from the shared clean pass (None without one)."""
        if not self.shared:
            return None
        distinct = self.unique.to(self.sites.device)[self.inverse]
        return torch.stack(self.residual)[self.sites, distinct, :self.prompt_length]

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        if not self.shared:
            with intervene(self.model, Perturbation(self.sites, vector, self.positions, self.prompt_end)):
                return target_nll(self.model(**self.batch.model_inputs()).logits, self.batch.labels)
        order = self.order.to(vector.device)
        perturbation = Perturbation(self.sites[order], vector[order], self.positions[order], self.prompt_end)
        # without a cache (prompt perturbations) the last block skips the unscored positions' outputs
        trim = self.scored if self.cache is None else 0
        final, _ = perturbed_prefill(self.model, self.residual, self.cache, self.unique, perturbation, self.batch,
                                      self.first, trim)
        return target_nll(lm_head(self.model)(final[:, self.scored - trim:]), self.labels)[self.inverse]

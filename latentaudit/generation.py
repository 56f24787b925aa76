"""Batched greedy generation with per-row latent perturbations, on the KV cache."""
from __future__ import annotations

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .batching import make_batch
from .hooks import Perturbation, PromptDeltas, batch_vectors, intervene


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
             max_new_tokens: int, batch_size: int = 256, hidden_index: torch.Tensor | None = None,
             vectors: torch.Tensor | PromptDeltas | None = None, positions: torch.Tensor | None = None,
             desc: str = "generate", return_token_ids: bool = False) -> list[str] | tuple[list[str], list[list[int]]]:
    """Greedy completions of token-id ``prompts``; row i optionally perturbed at site
    ``hidden_index[i]`` by ``vectors[i]`` at ``positions[i]`` (see ``hooks.batch_vectors``).
    With ``return_token_ids``, also the generated ids (through the first EOS, padding dropped),
    so a response can be re-scored exactly as generated rather than re-tokenized from text."""
    device = model_device(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    completions: list[str] = [""] * len(prompts)
    token_ids: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=5):
        rows = order[start:start + batch_size]
        batch = make_batch([prompts[i] for i in rows], None, tokenizer.pad_token_id).to(device)
        perturbation = None
        if hidden_index is not None:
            idx = torch.tensor(rows)
            perturbation = Perturbation(hidden_index[idx], batch_vectors(vectors, rows, int(batch.prompt_end[0])),
                                        positions[idx], batch.prompt_end)
        with intervene(model, perturbation):
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = out[:, batch.input_ids.shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, text, ids in zip(rows, texts, new.tolist()):
            completions[i] = text.strip()
            if tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(tokenizer.eos_token_id) + 1]
            token_ids[i] = ids
    return (completions, token_ids) if return_token_ids else completions

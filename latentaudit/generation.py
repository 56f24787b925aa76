"""Batched generation (greedy, or sampled independently of the batch layout) with per-row
latent perturbations, on the KV cache: the reference path, ``model.generate`` under the hooks.
The shared-prefix sweep engine (latentaudit/shared_prefix.py) must give the same tokens."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from .batching import make_batch
from .hooks import Perturbation, PromptDeltas, batch_vectors, intervene


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id generation stops on: the tokenizer's EOS and each id of the model's
    ``generation_config.eos_token_id`` (an int or a list: Llama-3's <|eot_id|>, Gemma's <end_of_turn>)."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def cut_at_stop(ids: list[int], stops: list[int]) -> list[int]:
    """``ids`` through the first stop id (kept), the rest dropped."""
    for position, token in enumerate(ids):
        if token in stops:
            return ids[:position + 1]
    return ids


# ---------------------------------------------------------------------------------------
# Sampling. torch.multinomial draws from one RNG stream for the whole batch, so a row's sample
# would depend on which rows share its batch, and a sweep could never match the one-row loop.
# Here a row's token at step t is argmax(logits / T + g) (the Gumbel-max trick: an exact draw
# from softmax(logits / T)), with g[v] a Gumbel variate hashed from (seed, the row's prompt,
# t, v): the same prompt draws the same noise alone, in any batch, under any perturbation
# (common random numbers: a setting's effect is not confounded with sampling noise).

def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic on negative values)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 (multiplication wraps modulo 2^64)."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


@dataclass(frozen=True)
class Sampling:
    """Temperature sampling (``generation.temperature`` > 0; 0 is greedy decoding, ``None`` here).
    ``seed`` picks the noise: draw k of a prompt is ``seed = k``."""
    temperature: float
    seed: int = 0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"sampling temperature must be > 0 (0 means greedy: no Sampling), got {self.temperature}")

    @classmethod
    def from_config(cls, generation: dict) -> "Sampling | None":
        temperature = float(generation.get("temperature", 0.0))
        return cls(temperature, int(generation.get("sample_seed", 0))) if temperature > 0 else None

    def keys(self, prompts: list[list[int]]) -> torch.Tensor:
        """One int64 key per prompt, from the seed and the prompt's token ids."""
        out = []
        for prompt in prompts:
            digest = hashlib.blake2b(repr((self.seed, list(prompt))).encode(), digest_size=8).digest()
            out.append(_signed(int.from_bytes(digest, "little")))
        return torch.tensor(out, dtype=torch.long)

    def gumbel(self, keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
        """[B, vocab] float32 Gumbel noise of rows ``keys`` at decoding step ``step``."""
        token = torch.arange(vocab, device=keys.device, dtype=torch.long)
        step_term = torch.tensor(step, device=keys.device, dtype=torch.long) * _GOLDEN  # int64 products wrap
        x = _splitmix64(_splitmix64(keys[:, None] + step_term) + token[None, :] * _GOLDEN)
        uniform = (_shift_right(x, 11).double() + 0.5) / float(1 << 53)  # in (0, 1)
        return (-torch.log(-torch.log(uniform))).float()

    def scores(self, logits: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """Noised scores of last-position ``logits`` [B, V]: their argmax is each row's draw."""
        return logits.float() / self.temperature + self.gumbel(keys.to(logits.device), step, logits.shape[-1])


class _GumbelScores(LogitsProcessor):
    """``Sampling`` inside ``model.generate`` (run greedy on the noised scores)."""

    def __init__(self, sampling: Sampling, keys: torch.Tensor, prompt_length: int):
        self.sampling, self.keys, self.prompt_length = sampling, keys, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.sampling.scores(scores, self.keys, input_ids.shape[1] - self.prompt_length)


def next_tokens(logits: torch.Tensor, sampling: Sampling | None, keys: torch.Tensor | None, step: int) -> torch.Tensor:
    """Greedy (``sampling`` None) or sampled next tokens from last-position ``logits`` [B, V]."""
    return (logits if sampling is None else sampling.scores(logits, keys, step)).argmax(-1)


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
             max_new_tokens: int, batch_size: int = 256, hidden_index: torch.Tensor | None = None,
             vectors: torch.Tensor | PromptDeltas | None = None, positions: torch.Tensor | None = None,
             desc: str = "generate", return_token_ids: bool = False,
             sampling: Sampling | None = None) -> list[str] | tuple[list[str], list[list[int]]]:
    """Greedy (or, with ``sampling``, sampled) completions of token-id ``prompts``; row i
    optionally perturbed at site ``hidden_index[i]`` by ``vectors[i]`` at ``positions[i]`` (see
    ``hooks.batch_vectors``). With ``return_token_ids``, also the generated ids (through the
    first EOS, padding dropped), so a response can be re-scored exactly as generated rather than
    re-tokenized from text."""
    device, stops = model_device(model), stop_token_ids(model, tokenizer)
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
        processors = LogitsProcessorList()
        if sampling is not None:
            keys = sampling.keys([prompts[i] for i in rows]).to(device)
            processors.append(_GumbelScores(sampling, keys, batch.input_ids.shape[1]))
        with intervene(model, perturbation):
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
        new = [cut_at_stop(ids, stops) for ids in out[:, batch.input_ids.shape[1]:].tolist()]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, text, ids in zip(rows, texts, new):
            completions[i] = text.strip()
            token_ids[i] = ids
    return (completions, token_ids) if return_token_ids else completions

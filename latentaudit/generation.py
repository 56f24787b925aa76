"""Batched generation (greedy, or sampled independently of the batch layout) with per-row
latent perturbations, on the KV cache."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from .batching import make_batch, target_nll
from .hooks import (PROMPT, Perturbation, PromptDeltas, batch_vectors, cache_kwargs, decoder_parts, intervene, lm_head,
                    record_residual, run_blocks_from, supports_shared_prefix, unwrap)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


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
        processors = LogitsProcessorList()
        if sampling is not None:
            keys = sampling.keys([prompts[i] for i in rows]).to(device)
            processors.append(_GumbelScores(sampling, keys, batch.input_ids.shape[1]))
        with intervene(model, perturbation):
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = out[:, batch.input_ids.shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, text, ids in zip(rows, texts, new.tolist()):
            completions[i] = text.strip()
            if tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(tokenizer.eos_token_id) + 1]
            token_ids[i] = ids
    return (completions, token_ids) if return_token_ids else completions


# ---------------------------------------------------------------------------------------
# Sweeps: many perturbations of few prompts. A perturbation at site s cannot change any site
# below s during the prefill, so each distinct prompt is run clean once (its residual at every
# site and its KV cache recorded), and each setting only runs blocks s..L-1 of its prefill
# from the recorded residual. The lower blocks' KV cache is the clean one, copied per row.
# Decoding steps run the whole model (generated tokens differ per setting), batched.


def _sweep_chunks(prompts: list[list[int]], hidden_index: torch.Tensor, batch_size: int) -> list[list[int]]:
    """Rows ordered by prompt length (less padding), chunks of ``batch_size``, each chunk's rows
    grouped by site so every site's rows are one contiguous slice."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [sorted(chunk, key=lambda i: (int(hidden_index[i]), len(prompts[i]))) for chunk in chunks]


def _unique_rows(sequences: list[tuple]) -> tuple[list[tuple], torch.Tensor]:
    """(distinct sequences in first-seen order, index of each row's sequence among them)."""
    first: dict[tuple, int] = {}
    index = [first.setdefault(s, len(first)) for s in sequences]
    return list(first), torch.tensor(index)


@torch.no_grad()
def _clean_pass(model, batch, cache) -> list[torch.Tensor]:
    """Residual at every site of a clean forward of ``batch``, filling ``cache`` if given."""
    decoder = decoder_parts(model)[0]
    with record_residual(model) as residual:
        decoder(**batch.model_inputs(), use_cache=cache is not None, **cache_kwargs(decoder, cache))
    return residual


def _first_perturbed(positions: torch.Tensor, length: int) -> int:
    """The first position any row may perturb: 0 with prompt positions, else the last prompt
    token (prefill rows need at least its logits). Earlier positions are clean at every site."""
    return 0 if bool(((positions & PROMPT) > 0).any()) else length - 1


def _perturbed_prefill(model, residual: list[torch.Tensor], clean_cache, unique: torch.Tensor,
                       perturbation: Perturbation, batch, first: int, outputs_from: int = 0
                       ) -> tuple[torch.Tensor, DynamicCache | None]:
    """Final hidden states [R, T - first, d] of every row's perturbed prefill from position
    ``first`` on, and (with ``clean_cache``) the rows' KV cache, from the clean pass of their
    distinct sequences (``unique`` maps row -> sequence). Rows are grouped by site (contiguous),
    as ``_sweep_chunks`` orders them. ``first`` > 0 needs ``clean_cache``."""
    n_blocks = len(residual) - 1
    sites, unique = perturbation.hidden_index, unique.to(perturbation.hidden_index.device)
    outputs, layer_keys = [], [[] for _ in range(n_blocks)]
    layer_values = [[] for _ in range(n_blocks)]
    for site in torch.unique_consecutive(sites).tolist():
        rows = (sites == site).nonzero()[:, 0]
        source = unique[rows]
        start = site if site >= 0 else n_blocks  # untouched rows (-1): the clean result as is
        hidden = residual[start][source][:, first:]
        if site >= 0:
            delta = perturbation.select(rows).delta(site, first, hidden.shape[1], hidden)
            hidden = hidden if delta is None else hidden + delta
        cache = None
        if clean_cache is not None:
            cache = DynamicCache(config=unwrap(model).config)
            for layer in range(n_blocks):  # below the site every position is clean, above it those before `first`
                keep = slice(None) if layer < start else slice(0, first)
                if layer < start or first > 0:
                    cache.update(clean_cache.layers[layer].keys[source, :, keep],
                                 clean_cache.layers[layer].values[source, :, keep], layer)
        hidden = run_blocks_from(model, hidden, start, batch.attention_mask[source],
                                 batch.position_ids[source][:, first:], cache, first, outputs_from)
        outputs.append(hidden)
        if cache is not None:
            for layer in range(n_blocks):
                layer_keys[layer].append(cache.layers[layer].keys)
                layer_values[layer].append(cache.layers[layer].values)
    rows_cache = None
    if clean_cache is not None:
        rows_cache = DynamicCache(config=unwrap(model).config)
        for layer in range(n_blocks):
            rows_cache.update(torch.cat(layer_keys[layer]), torch.cat(layer_values[layer]), layer)
    return torch.cat(outputs), rows_cache


@torch.no_grad()
def generate_sweep(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                   max_new_tokens: int, batch_size: int = 256, hidden_index: torch.Tensor | None = None,
                   vectors: torch.Tensor | PromptDeltas | None = None, positions: torch.Tensor | None = None,
                   desc: str = "generate_sweep", return_token_ids: bool = False,
                   sampling: Sampling | None = None) -> list[str] | tuple[list[str], list[list[int]]]:
    """``generate`` for sweeps (same arguments, same results): rows that share a prompt
    share its clean prefill below their site; see the section comment above. Falls back to
    ``generate`` for architectures ``hooks.supports_shared_prefix`` does not cover. Without
    ``hidden_index``, plain greedy generation on this loop (every row untouched): the same tokens
    as ``model.generate``, without its per-step overhead."""
    if not supports_shared_prefix(model):
        return generate(model, tokenizer, prompts, max_new_tokens, batch_size, hidden_index, vectors, positions,
                        desc, return_token_ids, sampling)
    if hidden_index is None:
        hidden_index = torch.full((len(prompts),), -1)
        vectors = torch.zeros(len(prompts), unwrap(model).config.hidden_size)
        positions = torch.zeros(len(prompts), dtype=torch.long)
    device, eos, pad = model_device(model), tokenizer.eos_token_id, tokenizer.pad_token_id
    head = lm_head(model)
    completions: list[str] = [""] * len(prompts)
    token_ids: list[list[int]] = [[] for _ in prompts]
    for rows in tqdm(_sweep_chunks(prompts, hidden_index, batch_size), desc=desc, mininterval=5):
        distinct, unique = _unique_rows([tuple(prompts[i]) for i in rows])
        clean_batch = make_batch([list(p) for p in distinct], None, pad).to(device)
        p_len = clean_batch.input_ids.shape[1]
        clean_cache = DynamicCache(config=unwrap(model).config)
        residual = _clean_pass(model, clean_batch, clean_cache)
        idx = torch.tensor(rows)
        perturbation = Perturbation(hidden_index[idx].to(device), batch_vectors(vectors, rows, p_len).to(device),
                                    positions[idx].to(device), torch.full((len(rows),), p_len, device=device))
        final, cache = _perturbed_prefill(model, residual, clean_cache, unique, perturbation, clean_batch,
                                          _first_perturbed(perturbation.positions, p_len))
        del residual, clean_cache
        keys = sampling.keys([prompts[i] for i in rows]).to(device) if sampling is not None else None
        token = next_tokens(head(final[:, -1]), sampling, keys, 0)
        new = torch.full((len(rows), max_new_tokens), pad, dtype=torch.long, device=device)
        new[:, 0] = token
        mask = clean_batch.attention_mask[unique.to(device)]
        active = torch.arange(len(rows), device=device)
        # Decoding: every block, the perturbation hooked at generated positions. Rows that
        # emitted EOS leave the batch (model.generate keeps them, padded, to the same result).
        for step in range(1, max_new_tokens):
            keep = token != eos
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                kept = keep.nonzero()[:, 0]
                active, token, mask = active[kept], token[kept], mask[kept]
                keys = keys[kept] if keys is not None else None
                perturbation = perturbation.select(kept)
                cache.batch_select_indices(kept)
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            with intervene(model, perturbation):
                logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                               use_cache=True, logits_to_keep=1, **cache_kwargs(unwrap(model), cache)).logits
            token = next_tokens(logits[:, -1], sampling, keys, step)
            new[active, step] = token
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, text, ids in zip(rows, texts, new.tolist()):
            completions[i] = text.strip()
            if eos in ids:
                ids = ids[:ids.index(eos) + 1]
            token_ids[i] = ids
    return (completions, token_ids) if return_token_ids else completions


@torch.no_grad()
def target_nll_sweep(model: PreTrainedModel, prompts: list[list[int]], targets: list[list[int]],
                     hidden_index: torch.Tensor, vectors: torch.Tensor | PromptDeltas, positions: torch.Tensor,
                     pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """Per-row summed NLL of ``targets`` after ``prompts`` with each row's perturbation active (the
    teacher-forced score of ``attacks.common.nll_probe``), sharing each distinct (prompt, target)'s
    clean pass below the row's site. [N] on the CPU."""
    device, head = model_device(model), lm_head(model)
    out = torch.zeros(len(prompts))
    if not supports_shared_prefix(model):  # the plain perturbed forward, whole model per row
        for start in range(0, len(prompts), batch_size):
            rows = list(range(start, min(start + batch_size, len(prompts))))
            batch = make_batch(prompts[start:rows[-1] + 1], targets[start:rows[-1] + 1], pad_id).to(device)
            perturbation = Perturbation(hidden_index[rows], batch_vectors(vectors, rows, int(batch.prompt_end[0])),
                                        positions[rows], batch.prompt_end)
            with intervene(model, perturbation):
                out[rows] = target_nll(model(**batch.model_inputs()).logits, batch.labels).cpu()
        return out
    for rows in _sweep_chunks(prompts, hidden_index, batch_size):
        distinct, unique = _unique_rows([(tuple(prompts[i]), tuple(targets[i])) for i in rows])
        batch = make_batch([list(p) for p, _ in distinct], [list(t) for _, t in distinct], pad_id).to(device)
        clean_cache = DynamicCache(config=unwrap(model).config)
        residual = _clean_pass(model, batch, clean_cache)
        idx = torch.tensor(rows)
        p_len = int(batch.prompt_end[0])
        perturbation = Perturbation(hidden_index[idx].to(device), batch_vectors(vectors, rows, p_len).to(device),
                                    positions[idx].to(device), torch.full((len(rows),), p_len, device=device))
        first = _first_perturbed(perturbation.positions, p_len)
        final, _ = _perturbed_prefill(model, residual, clean_cache, unique, perturbation, batch, first)
        logits, labels = head(final), batch.labels[unique.to(device)]
        # Each row is scored on its own unpadded span, zero logits before `first` (masked out by
        # the labels): the same shapes, hence the same summation order, as a single-row probe.
        for j, i in enumerate(rows):
            begin, end = p_len - len(prompts[i]), p_len + len(targets[i])
            row_logits = logits.new_zeros(1, end - begin, logits.shape[-1])
            lo = max(first, begin)
            row_logits[0, lo - begin:] = logits[j, lo - first:end - first]
            out[i] = target_nll(row_logits, labels[j:j + 1, begin:end]).item()
    return out


def sweep_chunks(n: int, prompts: list[list[int]], hidden_index: torch.Tensor, batch_size: int,
                 shared_prefix: bool) -> list[list[int]]:
    """Row chunks of a sweep: grouped by prompt length and site for the shared-prefix path,
    consecutive otherwise."""
    if shared_prefix:
        return _sweep_chunks(prompts, hidden_index, batch_size)
    return [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]


class TargetObjective:
    """Per-row summed NLL of ``targets`` after ``prompts`` with row i's perturbation (site
    ``hidden_index[i]``, ``positions[i]``, a vector [R, d] or prompt deltas [R, P, d]) active,
    differentiable in the perturbation: what a PGD attack calls at every step.

    ``shared_prefix`` (where ``hooks.supports_shared_prefix``): the clean pass of each distinct
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
        # rows grouped by site, as _perturbed_prefill expects; results go back to the caller's order
        self.order = torch.sort(self.sites.cpu(), stable=True).indices
        self.inverse = torch.argsort(self.order).to(device)
        distinct, self.unique = _unique_rows([(tuple(prompts[i]), tuple(targets[i])) for i in self.order.tolist()])
        self.batch = make_batch([list(p) for p, _ in distinct], [list(t) for _, t in distinct], pad_id).to(device)
        p_len = self.prompt_length = int(self.batch.prompt_end[0])  # the deltas' P (prompts are left-padded)
        self.prompt_end = torch.full((len(prompts),), p_len, device=device)
        self.first = _first_perturbed(self.positions, p_len)
        self.cache = DynamicCache(config=unwrap(model).config) if self.first > 0 else None
        self.residual = _clean_pass(model, self.batch, self.cache)
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
        final, _ = _perturbed_prefill(self.model, self.residual, self.cache, self.unique, perturbation, self.batch,
                                      self.first, trim)
        return target_nll(lm_head(self.model)(final[:, self.scored - trim:]), self.labels)[self.inverse]

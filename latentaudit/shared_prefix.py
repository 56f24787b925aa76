"""Sweeps: many perturbations of few prompts. A perturbation at site s cannot change any site
below s during the prefill, so each distinct prompt is run clean once (its residual at every
site and its KV cache recorded), and each setting only runs blocks s..L-1 of its prefill
from the recorded residual. The lower blocks' KV cache is the clean one, copied per row.
Decoding steps run the whole model (generated tokens differ per setting), batched."""
from __future__ import annotations

import torch
from tqdm import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from .batching import make_batch, target_nll
from .generation import Sampling, cut_at_stop, generate, model_device, next_tokens, stop_token_ids
from .hooks import (PROMPT, Perturbation, PromptDeltas, batch_vectors, decoder_parts, intervene, lm_head,
                    residual_stream, unwrap)
from .partial_forward import cache_kwargs, run_blocks_from, supports_shared_prefix


def _sweep_chunks(prompts: list[list[int]], hidden_index: torch.Tensor, batch_size: int) -> list[list[int]]:
    """Rows ordered by prompt length (less padding), chunks of ``batch_size``, each chunk's rows
    grouped by site so every site's rows are one contiguous slice."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [sorted(chunk, key=lambda i: (int(hidden_index[i]), len(prompts[i]))) for chunk in chunks]


def unique_rows(sequences: list[tuple]) -> tuple[list[tuple], torch.Tensor]:
    """(distinct sequences in first-seen order, index of each row's sequence among them)."""
    first: dict[tuple, int] = {}
    index = [first.setdefault(s, len(first)) for s in sequences]
    return list(first), torch.tensor(index)


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer over preallocated buffers [B, H, capacity, D] (or views of them), the
    first ``length`` positions filled. Each update writes its keys and values in place
    (``DynamicLayer`` concatenates, copying the whole cache every decoding step) and attention
    reads the filled part: the same values in the same shape. Rows leave by ``index_select``
    into fresh buffers (one pass; indexing would copy twice)."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int = 0):
        super().__init__()
        self.device, self.is_initialized = key_buffer.device, True
        self.key_buffer, self.value_buffer, self.length = key_buffer, value_buffer, length
        self._filled()

    @classmethod
    def empty_like(cls, keys: torch.Tensor, values: torch.Tensor, rows: int, capacity: int) -> "PreallocatedLayer":
        """An empty layer for ``rows`` rows of ``capacity`` positions, shaped and typed as ``keys``/``values``."""
        return cls(keys.new_empty(rows, keys.shape[1], capacity, keys.shape[-1]),
                   values.new_empty(rows, values.shape[1], capacity, values.shape[-1]))

    def _filled(self) -> None:
        self.keys = self.key_buffer[:, :, :self.length]
        self.values = self.value_buffer[:, :, :self.length]

    def _next(self, positions: int) -> slice:
        """The buffer slice of the next ``positions`` positions (an error where they do not fit)."""
        end = self.length + positions
        if end > self.key_buffer.shape[-2]:
            raise ValueError(f"PreallocatedLayer: {end} positions do not fit its capacity {self.key_buffer.shape[-2]}")
        return slice(self.length, end)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        span = self._next(key_states.shape[-2])
        self.key_buffer[:, :, span] = key_states
        self.value_buffer[:, :, span] = value_states
        self.fill(span.stop)
        return self.keys, self.values

    def gather(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
        """Append rows ``index`` of ``keys``/``values`` [N, H, T, D] in place: one pass (``update``
        of ``keys[index]`` would copy the gathered rows twice)."""
        span = self._next(keys.shape[-2])
        torch.index_select(keys, 0, index, out=self.key_buffer[:, :, span])
        torch.index_select(values, 0, index, out=self.value_buffer[:, :, span])
        self.fill(span.stop)

    def fill(self, length: int) -> None:
        """Mark the first ``length`` positions filled (written through views of this layer's rows)."""
        self.length = length
        self._filled()

    def rows(self, begin: int, end: int) -> "PreallocatedLayer":
        """An empty layer over rows begin..end-1 of these buffers (a view: what it is given lands here)."""
        return PreallocatedLayer(self.key_buffer[begin:end], self.value_buffer[begin:end])

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for name, filled in (("key_buffer", self.keys), ("value_buffer", self.values)):
            buffer = getattr(self, name)
            kept = buffer.new_empty(len(indices), *buffer.shape[1:])
            torch.index_select(filled, 0, indices, out=kept[:, :, :self.length])
            setattr(self, name, kept)
        self._filled()


def preallocated_cache(model, layers: list[PreallocatedLayer]) -> DynamicCache:
    """A ``DynamicCache`` for ``model`` whose layers are ``layers`` (one per block)."""
    cache = DynamicCache(config=unwrap(model).config)
    cache.layers = layers
    return cache


@torch.no_grad()
def clean_pass(model, batch, cache: DynamicCache | None = None) -> list[torch.Tensor]:
    """``hooks.residual_stream`` without gradients, filling ``cache`` (the KV cache) if given."""
    decoder = decoder_parts(model)[0]
    return residual_stream(model, batch, use_cache=cache is not None, **cache_kwargs(decoder, cache))


def first_perturbed(positions: torch.Tensor, length: int) -> int:
    """The first position any row may perturb: 0 with prompt positions, else the last prompt
    token (prefill rows need at least its logits). Earlier positions are clean at every site."""
    return 0 if bool(((positions & PROMPT) > 0).any()) else length - 1


def perturbed_prefill(model, residual: list[torch.Tensor], clean_cache, unique: torch.Tensor,
                       perturbation: Perturbation, batch, first: int, outputs_from: int = 0,
                       decode_positions: int | None = None) -> tuple[torch.Tensor, DynamicCache | None]:
    """Final hidden states [R, T - first, d] of every row's perturbed prefill from position
    ``first`` on, from the clean pass of their distinct sequences (``unique`` maps row ->
    sequence), and with ``decode_positions`` (and ``clean_cache``) the rows' KV cache,
    preallocated with room for that many decoding positions: each site's rows write their keys
    and values straight into it. Without ``decode_positions`` no cache is returned (the PGD
    objective reads the hidden states alone), so nothing below a row's site is copied. Rows are
    grouped by site (contiguous), as ``_sweep_chunks`` orders them. ``first`` > 0 needs
    ``clean_cache``."""
    n_blocks = len(residual) - 1
    sites, unique = perturbation.hidden_index, unique.to(perturbation.hidden_index.device)
    outputs = []
    preallocated = None
    if clean_cache is not None and decode_positions is not None:
        length = batch.attention_mask.shape[1]
        preallocated = [PreallocatedLayer.empty_like(clean_cache.layers[layer].keys, clean_cache.layers[layer].values,
                                                     len(sites), length + decode_positions)
                        for layer in range(n_blocks)]
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
            if preallocated is None:
                cache = DynamicCache(config=unwrap(model).config)
            else:  # the site's rows are one contiguous slice of the rows' cache
                begin, end = int(rows[0]), int(rows[-1]) + 1
                if end - begin != len(rows):
                    raise ValueError(f"perturbed_prefill: site {site}'s rows are not contiguous; group the rows by "
                                     "site (as _sweep_chunks does)")
                cache = preallocated_cache(model, [layer.rows(begin, end) for layer in preallocated])
            # below the site every position is clean (read only by the decoding that follows), above it
            # those before `first` (read by the blocks run here)
            for layer in range(n_blocks):
                if layer < start and preallocated is not None:
                    keep = slice(None)
                elif layer >= start and first > 0:
                    keep = slice(0, first)
                else:
                    continue
                clean = clean_cache.layers[layer]
                if preallocated is None:
                    cache.update(clean.keys[source, :, keep], clean.values[source, :, keep], layer)
                else:
                    cache.layers[layer].gather(clean.keys[:, :, keep], clean.values[:, :, keep], source)
        hidden = run_blocks_from(model, hidden, start, batch.attention_mask[source],
                                 batch.position_ids[source][:, first:], cache, first, outputs_from)
        outputs.append(hidden)
        if preallocated is not None and any(layer.length != length for layer in cache.layers):
            raise RuntimeError(f"perturbed_prefill: site {site}'s rows filled {[l.length for l in cache.layers]} of "
                               f"{length} cache positions")
    rows_cache = None
    if preallocated is not None:
        for layer in preallocated:
            layer.fill(length)
        rows_cache = preallocated_cache(model, preallocated)
    return torch.cat(outputs), rows_cache


@torch.no_grad()
def generate_sweep(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                   max_new_tokens: int, batch_size: int = 256, hidden_index: torch.Tensor | None = None,
                   vectors: torch.Tensor | PromptDeltas | None = None, positions: torch.Tensor | None = None,
                   desc: str = "generate_sweep", return_token_ids: bool = False,
                   sampling: Sampling | None = None) -> list[str] | tuple[list[str], list[list[int]]]:
    """``generate`` for sweeps (same arguments, same results): rows that share a prompt
    share its clean prefill below their site; see the module docstring. Falls back to
    ``generate`` for architectures ``partial_forward.supports_shared_prefix`` does not cover. Without
    ``hidden_index``, plain greedy generation on this loop (every row untouched): the same tokens
    as ``model.generate``, without its per-step overhead."""
    if not supports_shared_prefix(model):
        return generate(model, tokenizer, prompts, max_new_tokens, batch_size, hidden_index, vectors, positions,
                        desc, return_token_ids, sampling)
    if hidden_index is None:
        hidden_index = torch.full((len(prompts),), -1)
        vectors = torch.zeros(len(prompts), unwrap(model).config.hidden_size)
        positions = torch.zeros(len(prompts), dtype=torch.long)
    device, pad = model_device(model), tokenizer.pad_token_id
    stops = stop_token_ids(model, tokenizer)
    stop_ids = torch.tensor(stops, device=device)
    head = lm_head(model)
    completions: list[str] = [""] * len(prompts)
    token_ids: list[list[int]] = [[] for _ in prompts]
    for rows in tqdm(_sweep_chunks(prompts, hidden_index, batch_size), desc=desc, mininterval=5):
        distinct, unique = unique_rows([tuple(prompts[i]) for i in rows])
        clean_batch = make_batch([list(p) for p in distinct], None, pad).to(device)
        p_len = clean_batch.input_ids.shape[1]
        clean_cache = DynamicCache(config=unwrap(model).config)
        residual = clean_pass(model, clean_batch, clean_cache)
        idx = torch.tensor(rows)
        perturbation = Perturbation(hidden_index[idx].to(device), batch_vectors(vectors, rows, p_len).to(device),
                                    positions[idx].to(device), torch.full((len(rows),), p_len, device=device))
        final, cache = perturbed_prefill(model, residual, clean_cache, unique, perturbation, clean_batch,
                                          first_perturbed(perturbation.positions, p_len), decode_positions=max_new_tokens)
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
            keep = ~torch.isin(token, stop_ids)
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
        cut = [cut_at_stop(ids, stops) for ids in new.tolist()]
        texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
        for i, text, ids in zip(rows, texts, cut):
            completions[i] = text.strip()
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
        distinct, unique = unique_rows([(tuple(prompts[i]), tuple(targets[i])) for i in rows])
        batch = make_batch([list(p) for p, _ in distinct], [list(t) for _, t in distinct], pad_id).to(device)
        clean_cache = DynamicCache(config=unwrap(model).config)
        residual = clean_pass(model, batch, clean_cache)
        idx = torch.tensor(rows)
        p_len = int(batch.prompt_end[0])
        perturbation = Perturbation(hidden_index[idx].to(device), batch_vectors(vectors, rows, p_len).to(device),
                                    positions[idx].to(device), torch.full((len(rows),), p_len, device=device))
        first = first_perturbed(perturbation.positions, p_len)
        final, _ = perturbed_prefill(model, residual, clean_cache, unique, perturbation, batch, first)
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

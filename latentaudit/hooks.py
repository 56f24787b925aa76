"""The one place that touches a model's internals: additive interventions on the residual stream.

Sites follow the project's layer convention: ``layer ℓ`` is the output of decoder block ℓ
(``hidden_states[ℓ + 1]``) and ``"embed"`` is the embedding output (``hidden_states[0]``).
Internally a site is its *hidden index* into ``hidden_states``.

Each batch row carries its own perturbation (site, vector, positions), so a sweep can pack
many settings into one forward pass. Positions are resolved per forward call from the number
of tokens already in the KV cache, so the same intervention serves a teacher-forced pass, a
prefill and every cached decoding step.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

EMBED = "embed"
# Position codes are bit flags, so a row can combine them ("last_prompt+generated").
LAST_PROMPT, PROMPT, GENERATED = 1, 2, 4
POSITIONS = {"last_prompt": LAST_PROMPT, "prompt": PROMPT | LAST_PROMPT, "generated": GENERATED,
             "all": PROMPT | LAST_PROMPT | GENERATED}


def position_code(spec: str | Sequence[str]) -> int:
    """``"last_prompt+generated"`` or ``["last_prompt", "generated"]`` -> bit flags."""
    names = spec.split("+") if isinstance(spec, str) else list(spec)
    code = 0
    for name in names:
        if name not in POSITIONS:
            raise ValueError(f"unknown position {name!r}; valid: {sorted(POSITIONS)}")
        code |= POSITIONS[name]
    return code


def hidden_index(layer: int | str, n_layers: int) -> int:
    """Config layer (block index or ``"embed"``) -> index into ``hidden_states``."""
    if layer == EMBED:
        return 0
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} out of range: valid are 0..{n_layers - 1} or {EMBED!r}")
    return layer + 1


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under any PEFT wrapping."""
    while hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.ModuleList]:
    """(decoder, embedding, blocks) of a causal LM, plain or PEFT-wrapped."""
    base = unwrap(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return decoder, decoder.get_input_embeddings(), decoder.layers


def n_layers(model: nn.Module) -> int:
    return len(decoder_parts(model)[2])


@dataclass
class Perturbation:
    """Per-row additive perturbations.

    hidden_index: [B] long, the site of each row (0 = embed, ℓ + 1 = block ℓ); -1 = untouched.
    vector: [B, d] added at every selected position, or [B, T, d] added position by position
        (T absolute positions from the start of the sequence, prompt padding included).
    positions: [B] long position codes (see ``POSITIONS``).
    prompt_end: [B] long, the absolute index one past each row's last prompt token.
    """
    hidden_index: torch.Tensor
    vector: torch.Tensor
    positions: torch.Tensor
    prompt_end: torch.Tensor

    def __post_init__(self):
        b = self.hidden_index.shape[0]
        for name in ("vector", "positions", "prompt_end"):
            if getattr(self, name).shape[0] != b:
                raise ValueError(f"Perturbation.{name} has {getattr(self, name).shape[0]} rows, expected {b}")

    def select(self, rows: torch.Tensor) -> "Perturbation":
        """The perturbation of a subset of rows (a sweep drops rows that finished)."""
        return Perturbation(self.hidden_index[rows], self.vector[rows], self.positions[rows], self.prompt_end[rows])

    def delta(self, site: int, offset: int, length: int, like: torch.Tensor) -> torch.Tensor | None:
        """The additive term for hidden states of shape [B, length, d] at absolute positions
        offset..offset+length-1 of ``site``; None when no row acts here."""
        rows = self.hidden_index.to(like.device) == site
        if not bool(rows.any()):
            return None
        pos = torch.arange(offset, offset + length, device=like.device)[None, :]
        end = self.prompt_end.to(like.device)[:, None]
        code = self.positions.to(like.device)[:, None]
        mask = (((code & LAST_PROMPT) > 0) & (pos == end - 1)) \
            | (((code & PROMPT) > 0) & (pos < end)) \
            | (((code & GENERATED) > 0) & (pos >= end))
        mask = mask & rows[:, None]
        vector = self.vector.to(device=like.device, dtype=like.dtype)
        if vector.dim() == 2:
            vector = vector[:, None, :]
        else:
            vector = vector[:, offset:offset + length, :]
            if vector.shape[1] < length:  # positions past the given deltas are untouched
                vector = torch.nn.functional.pad(vector, (0, 0, 0, length - vector.shape[1]))
        return mask[:, :, None].to(like.dtype) * vector


# Per-token prompt perturbations travel between batch layouts as one [n_i, d] tensor per row,
# right-aligned to the prompt's last token (left padding differs from batch to batch).
PromptDeltas = list


def batch_vectors(vectors: "torch.Tensor | PromptDeltas", rows: Sequence[int], prompt_end: int) -> torch.Tensor:
    """The perturbation vectors of ``rows`` for one batch: a [B, d] tensor (one vector for every
    selected position), or per-token prompt deltas laid out as [B, prompt_end, d], each row's
    deltas ending at the last prompt position (truncated at the left if the prompt is shorter)."""
    if isinstance(vectors, torch.Tensor):
        return vectors[torch.as_tensor(list(rows))]
    out = torch.zeros(len(rows), prompt_end, vectors[rows[0]].shape[-1])
    for j, i in enumerate(rows):
        delta = vectors[i][-prompt_end:]
        out[j, prompt_end - len(delta):] = delta
    return out


@functools.lru_cache(maxsize=None)
def _cache_name(function) -> str:
    """The name ``function`` takes its KV cache under: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name is deprecated, removed in 5.40)."""
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def cache_kwargs(callee, cache) -> dict:
    """``{name: cache}`` for a module (its ``forward``) or function, under the name it takes."""
    function = type(callee).forward if isinstance(callee, nn.Module) else callee
    return {_cache_name(function): cache}


def _cache_length(kwargs: dict) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None or not hasattr(cache, "get_seq_length"):
        return 0
    return int(cache.get_seq_length())


@contextlib.contextmanager
def intervene(model: nn.Module, perturbation: Perturbation | None) -> Iterator[None]:
    """Add ``perturbation`` to the residual stream for every forward pass inside the block.

    Works on plain and PEFT-wrapped models, on Tensor or tuple block outputs, and always
    removes its hooks, also when the block raises. ``None`` is a no-op (clean run).
    """
    if perturbation is None:
        yield
        return
    decoder, embed, blocks = decoder_parts(model)
    state = {"offset": 0}

    def on_decoder_call(_module, args, kwargs):
        state["offset"] = _cache_length(kwargs)
        return None

    def make_hook(site: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            delta = perturbation.delta(site, state["offset"], hidden.shape[1], hidden)
            if delta is None:
                return None
            hidden = hidden + delta
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    handles = [decoder.register_forward_pre_hook(on_decoder_call, with_kwargs=True),
               embed.register_forward_hook(make_hook(0))]
    handles += [block.register_forward_hook(make_hook(i + 1)) for i, block in enumerate(blocks)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def record_residual(model: nn.Module) -> Iterator[list]:
    """Record the residual stream at every site of the next forward pass: yields a list that
    holds, after the pass, [embed, block 0, …, block L−1] outputs (each [B, T, d]).

    Use this rather than ``output_hidden_states``: transformers applies the final norm to the
    last entry of ``hidden_states``, so its last element is not block L−1's output. Entered
    inside ``intervene``, it records the perturbed stream.
    """
    _, embed, blocks = decoder_parts(model)
    sites: list = [None] * (len(blocks) + 1)

    def make_hook(site: int):
        def hook(_module, _inputs, output):
            sites[site] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [embed.register_forward_hook(make_hook(0))]
    handles += [block.register_forward_hook(make_hook(i + 1)) for i, block in enumerate(blocks)]
    try:
        yield sites
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """No parameter gradients inside the block (attacks differentiate only their perturbation);
    each parameter's ``requires_grad`` is restored on exit, also on error."""
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)


# ---------------------------------------------------------------------------------------
# Shared-prefix execution: a perturbation at site s leaves every site below s unchanged, so a
# sweep can run the clean model once per prompt and only blocks s..L-1 once per setting.

# Architectures whose decoder is exactly embed -> blocks(causal mask, rotary) -> norm, so
# running a suffix of the blocks by hand reproduces the model's own forward.
SHARED_PREFIX_MODEL_TYPES = ("llama", "mistral", "qwen2")


def supports_shared_prefix(model: nn.Module) -> bool:
    """Whether ``run_blocks_from`` reproduces this model's forward (plain causal attention)."""
    config = unwrap(model).config
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return config.model_type in SHARED_PREFIX_MODEL_TYPES and not sliding


def run_blocks_from(model: nn.Module, hidden: torch.Tensor, site: int, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, cache=None, past: int = 0, outputs_from: int = 0) -> torch.Tensor:
    """Continue a prefill from the residual stream at ``site`` (hidden [B, T, d], the state after
    the site's perturbation, at absolute positions past..past+T-1): run blocks site..L-1 and the
    final norm; returns [B, T, d].

    ``attention_mask`` [B, past + T] marks real tokens; ``position_ids`` [B, T]. ``cache`` (a
    DynamicCache) receives the keys/values of blocks site..L-1; the caller fills its layers below
    ``site`` (all positions) and, when ``past`` > 0, layers site.. with the first ``past``
    positions (the clean ones, shared by every setting).

    ``outputs_from`` > 0 (no ``cache``, no ``past``): only positions ``outputs_from``.. are
    returned ([B, T - outputs_from, d]); the last block computes just the keys and values of the
    earlier positions (their queries, attention outputs and MLP feed nothing that is returned).
    """
    from transformers.masking_utils import create_causal_mask

    decoder, _, blocks = decoder_parts(model)
    if outputs_from:
        if cache is not None or past:
            raise ValueError("run_blocks_from: outputs_from needs cache=None and past=0")
        if site >= len(blocks):
            return decoder.norm(hidden[:, outputs_from:])
    # Sized against layer `site`: lower layers already hold every prompt position.
    mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              position_ids=position_ids, layer_idx=site if past else None,
                              **cache_kwargs(create_causal_mask, cache if past else None))
    position_embeddings = decoder.rotary_emb(hidden, position_ids=position_ids)
    for block in blocks[site:len(blocks) - 1 if outputs_from else None]:
        hidden = block(hidden, attention_mask=mask, position_embeddings=position_embeddings,
                       position_ids=position_ids, use_cache=cache is not None, **cache_kwargs(block, cache))
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    if outputs_from:
        hidden = _last_block_suffix(decoder, blocks[-1], len(blocks) - 1, hidden, outputs_from, attention_mask,
                                    position_ids, position_embeddings)
    return decoder.norm(hidden)


def _last_block_suffix(decoder, block, layer: int, hidden: torch.Tensor, start: int, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor, position_embeddings) -> torch.Tensor:
    """The last block's output at positions ``start``.. of ``hidden``: the earlier positions'
    keys and values (this block's projections of its own input, rotated) go in a cache, and the
    block runs on the later positions only, as a decoding step would."""
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama.modeling_llama import rotate_half  # the same for mistral and qwen2

    attention = block.self_attn
    prefix = block.input_layernorm(hidden[:, :start])
    shape = (*prefix.shape[:-1], -1, attention.head_dim)
    keys = attention.k_proj(prefix).view(shape).transpose(1, 2)
    values = attention.v_proj(prefix).view(shape).transpose(1, 2)
    cos, sin = (e[:, :start].unsqueeze(1) for e in position_embeddings)
    keys = keys * cos + rotate_half(keys) * sin  # the block's rotary embedding, on the keys alone
    cache = DynamicCache(config=decoder.config)
    cache.update(keys, values, layer)
    suffix, suffix_ids = hidden[:, start:], position_ids[:, start:]
    mask = create_causal_mask(config=decoder.config, inputs_embeds=suffix, attention_mask=attention_mask,
                              position_ids=suffix_ids, layer_idx=layer, **cache_kwargs(create_causal_mask, cache))
    out = block(suffix, attention_mask=mask, position_embeddings=tuple(e[:, start:] for e in position_embeddings),
                position_ids=suffix_ids, use_cache=True, **cache_kwargs(block, cache))
    return out[0] if isinstance(out, tuple) else out


def lm_head(model: nn.Module) -> nn.Module:
    return unwrap(model).get_output_embeddings()


@contextlib.contextmanager
def observe_linear_layers(model: nn.Module, observe) -> Iterator[None]:
    """Call ``observe(layer, input, output)`` after every forward of each ``nn.Linear`` in
    ``model`` (PEFT's adapter layers too) inside the block; the hooks are always removed."""
    handles = [module.register_forward_hook(lambda layer, inputs, output: observe(layer, inputs[0], output))
               for module in model.modules() if isinstance(module, nn.Linear)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

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


def residual_stream(model: nn.Module, batch, **decoder_kwargs) -> list:
    """The residual at every site ([embed, block 0, ..., block L-1], each [B, T, d]) of a forward of
    ``batch`` through the decoder alone, for callers that read activations only: the vocabulary
    head's logits at every position would be discarded (on SmolLM2-135M the head is a fifth of the
    forward). Bit-identical to the sites of a full forward (tests/test_asa.py); gradients flow as
    the caller's context allows (``shared_prefix.clean_pass`` is the no-grad form)."""
    decoder = decoder_parts(model)[0]
    with record_residual(model) as residual:
        decoder(**batch.model_inputs(), **decoder_kwargs)
    return residual


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

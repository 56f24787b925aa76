"""The decoder's forward from a site onward, run by hand: blocks s..L-1 and the final norm on a
given residual stream. A perturbation at site s leaves every site below s unchanged, so a sweep
(latentaudit/shared_prefix.py) runs the clean model once per prompt and only this suffix once per
setting. Written against the Llama decoder (embed -> blocks(causal mask, rotary) -> norm); the
architectures it reproduces exactly are listed in ``SHARED_PREFIX_MODEL_TYPES``."""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from .hooks import decoder_parts, unwrap


@functools.lru_cache(maxsize=None)
def _cache_name(function) -> str:
    """The name ``function`` takes its KV cache under: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name is deprecated, removed in 5.40)."""
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def cache_kwargs(callee, cache) -> dict:
    """``{name: cache}`` for a module (its ``forward``) or function, under the name it takes."""
    function = type(callee).forward if isinstance(callee, nn.Module) else callee
    return {_cache_name(function): cache}


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

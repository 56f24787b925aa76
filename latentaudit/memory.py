"""Batch sizes from available memory (``generation.batch_size: auto``).

A sweep packs settings x prompts into batches; the largest batch that fits is the fastest on
a GPU. The estimate per batch row is an upper bound built from the model's config (what a
row holds at its peak), and the batch is sized to a fraction of the memory free after the
model was loaded, so other allocations (the caching allocator's slack, fragmentation,
tokenizer and data) keep headroom.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .hooks import unwrap

log = logging.getLogger(__name__)

AUTO = "auto"
# Rows beyond this bring no speed on the hardware we measured, only longer single steps.
MAX_AUTO_BATCH = 1024


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the CUDA driver's free bytes, else the host's MemAvailable."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@dataclass(frozen=True)
class RowShape:
    """The sizes one batch row's memory depends on (from a decoder config)."""
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> "RowShape":
        config = getattr(config, "text_config", config)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, heads,
                   getattr(config, "num_key_value_heads", None) or heads, head_dim, config.vocab_size)


def row_bytes(shape: RowShape, prompt_len: int, new_tokens: int, element_bytes: int, with_grad: bool) -> int:
    """Upper bound on one row's peak memory in a sweep.

    Generation: the row's KV cache over prompt + generated tokens, the recorded clean residual
    at every site, one block's transient activations (attention scores in float32 for eager
    attention) and the last position's float32 logits. With gradients (PGD steps): every
    block's saved activations for the backward pass (norm inputs, q/k/v/o, three MLP tensors,
    the attention probabilities) over prompt + target (``new_tokens`` long), and float32 logits
    at every position.
    """
    s, t = prompt_len + new_tokens, prompt_len
    kv_cache = 2 * shape.layers * shape.kv_heads * shape.head_dim * s * element_bytes
    residual = (shape.layers + 1) * t * shape.hidden * element_bytes
    transient = (t * (4 * shape.hidden + 3 * shape.intermediate) * element_bytes
                 + shape.heads * t * s * 4 + shape.vocab * 4)
    if not with_grad:
        return kv_cache + residual + transient
    saved = shape.layers * s * (8 * shape.hidden + 4 * shape.intermediate) * element_bytes \
        + shape.layers * shape.heads * s * s * element_bytes
    # The gradient of the input delta and the delta itself (float32), per prompt position.
    delta = 2 * t * shape.hidden * 4
    return residual + saved + transient + delta + s * shape.vocab * 4


def auto_batch_size(model: torch.nn.Module, prompt_len: int, new_tokens: int, with_grad: bool,
                    fraction: float = 0.5, cap: int = MAX_AUTO_BATCH) -> int:
    """The largest batch whose estimated peak fits in ``fraction`` of the free memory (>= 1)."""
    parameter = next(model.parameters())
    per_row = row_bytes(RowShape.of(unwrap(model).config), prompt_len, new_tokens, parameter.element_size(), with_grad)
    free = available_bytes(parameter.device)
    size = max(1, min(cap, int(free * fraction // per_row)))
    log.info("batch size auto (%s): %d rows (%.1f MB per row, %.1f GB free)", "PGD" if with_grad else "generation",
             size, per_row / 2**20, free / 2**30)
    return size


def resolve_batch_sizes(setting: int | str, model: torch.nn.Module, prompt_len: int,
                        new_tokens: int) -> tuple[int, int]:
    """``generation.batch_size`` -> (generation batch size, PGD batch size): an integer serves
    both; ``auto`` sizes each from the memory free now."""
    if setting == AUTO:
        return (auto_batch_size(model, prompt_len, new_tokens, with_grad=False),
                auto_batch_size(model, prompt_len, new_tokens, with_grad=True))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"generation.batch_size must be a positive integer or 'auto', got {setting!r}")
    return setting, setting

"""Floating-point work: what a model's passes cost and what this machine's matmul can do (the
bench's achieved FLOP/s and its fraction of that limit).

The count is tokens × 2 × parameters, taken layer by layer on the tokens each linear layer
actually processes: an ``nn.Linear`` call on ``rows`` input vectors costs ``2 · rows · in · out``
(one multiply and one add per weight per row). So a shared-prefix sweep, which runs the blocks
below a row's site once per prompt, a cached decoding step (one token per row) and a prefill
whose LM head scores the last position only are each counted as run, padding included.

Backward: when a backward pass reaches a call's output, the call's input gradient costs one more
forward's worth where its input requires grad, its weight gradient another where the weight
does. The latent attacks freeze the weights, so their backward costs 1× the forward of the
blocks above the site, not the 2× of training (which the count gives when weights are trainable).

Not counted: the attention scores and weighted values (2 · 2 · d · positions attended, per token
and block), norms, activations, the embedding lookup. The count is a lower bound on the work
done; at the bench's ~40 positions the attention matmuls add about 3 % on the organism
(d = 256, 1.3 MFLOP of linear layers per token and block) and under 1 % on the 1B Llama.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from .hooks import observe_linear_layers


def linear_flops(rows: int, in_features: int, out_features: int) -> int:
    """``2 · rows · in · out``: one multiply and one add per weight per input row."""
    return 2 * rows * in_features * out_features


@dataclass
class FlopCount:
    forward: int = 0
    backward: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward


@contextlib.contextmanager
def count_flops(model: torch.nn.Module) -> Iterator[FlopCount]:
    """Count the linear layers' FLOPs of every pass of ``model`` inside the block (see the module
    docstring); the yielded count is complete on exit."""
    count = FlopCount()

    def observe(layer, inputs: torch.Tensor, output: torch.Tensor) -> None:
        flops = linear_flops(inputs.numel() // layer.in_features, layer.in_features, layer.out_features)
        count.forward += flops
        if output.requires_grad:  # counted when the backward pass reaches this output, if it does
            backward = flops * (int(inputs.requires_grad) + int(layer.weight.requires_grad))
            output.register_hook(lambda _grad: _add_backward(count, backward))

    with observe_linear_layers(model, observe):
        yield count


def _add_backward(count: FlopCount, flops: int) -> None:
    count.backward += flops


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads its end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flop_per_s(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                      repeats: int = 5) -> float:
    """This machine's matmul throughput: ``size``³ products of random matrices, the best of
    ``repeats`` timed runs after one untimed warm-up, as ``2 · size³`` / seconds. Measured in
    the process that uses it (same threads and pinned kernels)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return linear_flops(size, size, size) / best


def flop_rate(flop_per_s: float) -> str:
    """``3.1e10`` -> ``"31.0 GFLOP/s"``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flop_per_s >= scale:
            return f"{flop_per_s / scale:.1f} {unit}FLOP/s"
    return f"{flop_per_s:.0f} FLOP/s"

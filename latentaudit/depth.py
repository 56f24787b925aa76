"""Layers named by their depth fraction (LVS paper): the nudge layer round(depth · L) and the
activation-match band, for a model of L blocks. Plain arithmetic, no torch: the dissociated
model, the steering attack and the audit-gap report (which reads only CSVs) share it."""
from __future__ import annotations


def nudge_layer(num_layers: int, depth: float) -> int:
    """round(depth · L), clamped to a block index."""
    return min(max(int(round(depth * num_layers)), 0), num_layers - 1)


def depth_band(num_layers: int, low: float, high: float) -> list[int]:
    """Blocks round(low · L) … round(high · L) (at least one)."""
    first, last = nudge_layer(num_layers, low), nudge_layer(num_layers, high)
    return list(range(first, max(first, last) + 1))

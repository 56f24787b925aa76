"""Layers named by their depth fraction (LVS paper): the nudge layer round(depth · L) and the
activation-match band, for a model of L blocks. Plain arithmetic, no torch: the dissociated
model, the steering attack and the audit-gap report (which reads only CSVs) share it."""
from __future__ import annotations

# The setting every user of the nudge layer shares (the config's top-level `nudge_depth`, copied
# into each method's settings): one schema for it.
NUDGE_DEPTH_SCHEMA = {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "nudge layer = round(nudge_depth * L) (block output); the config's top-level "
                                     "nudge_depth (shared by the dissociated model, steering and adaptive PGD)"}


def nudge_layer(num_layers: int, depth: float) -> int:
    """round(depth · L), clamped to a block index."""
    return min(max(int(round(depth * num_layers)), 0), num_layers - 1)


def depth_band(num_layers: int, low: float, high: float) -> list[int]:
    """Blocks round(low · L) … round(high · L) (at least one)."""
    first, last = nudge_layer(num_layers, low), nudge_layer(num_layers, high)
    return list(range(first, max(first, last) + 1))

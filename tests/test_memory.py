"""generation.batch_size: auto sizes batches from the memory that is free."""
import pytest
import torch

from latentaudit import memory
from latentaudit.memory import RowShape, auto_batch_size, resolve_batch_sizes, row_bytes

SHAPE = RowShape(layers=2, hidden=32, intermediate=64, heads=4, kv_heads=4, head_dim=8, vocab=222)


def test_a_row_costs_more_with_longer_sequences_and_with_gradients():
    assert row_bytes(SHAPE, 20, 10, 4, False) < row_bytes(SHAPE, 40, 10, 4, False) < row_bytes(SHAPE, 40, 20, 4, False)
    assert row_bytes(SHAPE, 20, 10, 2, False) < row_bytes(SHAPE, 20, 10, 4, False)
    assert row_bytes(SHAPE, 20, 10, 4, False) < row_bytes(SHAPE, 20, 10, 4, True)
    # The KV cache alone: 2 (K, V) x layers x kv heads x head dim x positions x bytes.
    assert row_bytes(SHAPE, 20, 10, 4, False) > 2 * 2 * 4 * 8 * 30 * 4


def test_shape_reads_grouped_query_configs(tiny_model):
    shape = RowShape.of(tiny_model.config)
    assert (shape.layers, shape.hidden, shape.heads, shape.head_dim) == (2, 32, 4, 8)


def test_auto_fits_a_fraction_of_the_free_memory(tiny_model, monkeypatch):
    per_row = row_bytes(RowShape.of(tiny_model.config), 12, 8, 4, False)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 100 * per_row)
    assert auto_batch_size(tiny_model, 12, 8, with_grad=False, fraction=0.5) == 50
    assert auto_batch_size(tiny_model, 12, 8, with_grad=True, fraction=0.5) < 50
    assert auto_batch_size(tiny_model, 12, 8, with_grad=False, fraction=0.5, cap=16) == 16
    monkeypatch.setattr(memory, "available_bytes", lambda device: per_row // 10)
    assert auto_batch_size(tiny_model, 12, 8, with_grad=False) == 1  # never zero rows


def test_free_memory_is_read_from_the_host():
    assert memory.available_bytes(torch.device("cpu")) > 2**26


def test_integer_batch_sizes_serve_both_and_bad_ones_are_named(tiny_model):
    assert resolve_batch_sizes(64, tiny_model, 12, 8) == (64, 64)
    generation, pgd = resolve_batch_sizes("auto", tiny_model, 12, 8)
    assert 1 <= pgd <= generation <= memory.MAX_AUTO_BATCH
    with pytest.raises(ValueError, match="positive integer or 'auto', got 'big'"):
        resolve_batch_sizes("big", tiny_model, 12, 8)

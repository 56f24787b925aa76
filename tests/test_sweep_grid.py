"""The sweep grid every attack and the benchmark lay their rows out with."""
import pytest

from latentaudit.attacks.common import SweepGrid


def test_product_nests_strength_layer_direction_prompt_with_prompts_fastest():
    grid = SweepGrid.product([0.5, 1], [3, 5], n_prompts=2, n_directions=2)
    assert len(grid) == 16
    assert grid.index[:4] == [0, 1, 0, 1] and grid.direction[:4] == [0, 0, 1, 1]
    assert grid.layer[:8] == [3] * 4 + [5] * 4 and grid.strength == [0.5] * 8 + [1.0] * 8
    assert all(isinstance(s, float) for s in grid.strength)  # an integer alpha is stored as a float
    assert grid.settings() == [(0.5, 3, 0), (0.5, 3, 1), (0.5, 5, 0), (0.5, 5, 1),
                               (1.0, 3, 0), (1.0, 3, 1), (1.0, 5, 0), (1.0, 5, 1)]


def test_another_order_puts_the_layer_outermost():
    grid = SweepGrid.product([0.1, 0.2], ["embed", 0], n_prompts=3, order=("layer", "strength", "direction", "prompt"))
    assert grid.layer == ["embed"] * 6 + [0] * 6
    assert grid.strength == [0.1] * 3 + [0.2] * 3 + [0.1] * 3 + [0.2] * 3
    assert grid.settings() == [(0.1, "embed", 0), (0.2, "embed", 0), (0.1, 0, 0), (0.2, 0, 0)]


def test_repeated_strengths_keep_one_block_each():
    grid = SweepGrid.product([0.5, 0.5], [1], n_prompts=2)
    assert len(grid) == 4 and grid.settings() == [(0.5, 1, 0), (0.5, 1, 0)]


def test_with_control_repeats_the_rows_as_direction_one():
    grid = SweepGrid.product([2], [1, 2], n_prompts=2).with_control()
    assert grid.index == [0, 1, 0, 1] * 2 and grid.layer == [1, 1, 2, 2] * 2
    assert grid.direction == [0] * 4 + [1] * 4 and grid.strength == [2.0] * 8


def test_an_order_must_name_every_axis_once():
    with pytest.raises(ValueError, match="must name each of"):
        SweepGrid.product([1], [1], 1, order=("strength", "layer", "prompt"))

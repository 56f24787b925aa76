"""Perturbation sizes relative to the activation, on hand cases."""
import torch

from latentaudit.perturbation_size import linf_epsilon


def test_linf_epsilon_is_budget_times_max_abs_activation_over_real_positions():
    stream = torch.tensor([[[1.0, -3.0], [0.5, 2.0]],
                           [[9.0, 9.0], [-0.5, 0.25]]])   # row 1's first position is padding
    real = torch.tensor([[[1.0], [1.0]], [[0.0], [1.0]]])
    epsilon = linf_epsilon(torch.tensor([0.1, 2.0]), stream, real)
    assert torch.allclose(epsilon, torch.tensor([0.1 * 3.0, 2.0 * 0.5]))

"""The one masked log-prob gather every NLL and token loss is built on, on a hand case."""
import math

import pytest
import torch

from latentaudit.batching import label_log_probs, target_nll


def test_label_log_probs_shift_the_labels_and_mask_the_unlabelled():
    # vocabulary of 2; position t predicts the token at t + 1
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[-100, 0, 1]])  # the prompt token is unlabelled
    picked, mask = label_log_probs(logits, labels)
    assert mask.tolist() == [[True, True]]
    assert torch.allclose(picked, torch.log(torch.tensor([[0.5, 0.75]])))
    assert target_nll(logits, labels).item() == pytest.approx(-(math.log(0.5) + math.log(0.75)))
    _, unlabelled = label_log_probs(logits, torch.tensor([[-100, -100, 1]]))
    assert unlabelled.tolist() == [[False, True]]

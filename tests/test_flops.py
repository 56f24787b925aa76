"""FLOP counting (tokens x 2 x parameters per linear layer, plus backward) on hand-computed cases."""
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from latentaudit.flops import count_flops, flop_rate, linear_flops, matmul_flop_per_s
from latentaudit.partial_forward import cache_kwargs


def _two_layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_a_linear_call_costs_two_flops_per_weight_per_row():
    model = _two_layers()
    with count_flops(model) as count:
        model(torch.randn(2, 5, 3))                 # 10 rows: 2·10·3·4 + 2·10·4·2; no backward pass
    assert (count.forward, count.backward) == (240 + 160, 0)
    assert linear_flops(2048, 2048, 2048) == 2 * 2048 ** 3


def test_backward_counts_input_and_weight_gradients_where_autograd_needs_them():
    model = _two_layers()
    for p in model.parameters():
        p.requires_grad_(False)                     # an attack: frozen weights, gradient of the input
    x = torch.randn(10, 3, requires_grad=True)
    with count_flops(model) as count:
        model(x).sum().backward()
    assert (count.forward, count.backward) == (400, 400)   # input gradients only: 1x forward
    for p in model.parameters():
        p.requires_grad_(True)                      # training: the input needs no gradient
    with count_flops(model) as count:
        model(torch.randn(10, 3)).sum().backward()
    # layer 1: weight gradient only (240); layer 2: input and weight gradients (2 · 160)
    assert (count.forward, count.backward) == (400, 240 + 320)
    with torch.no_grad(), count_flops(model) as count:
        model(torch.randn(10, 3))
    assert count.backward == 0


def test_a_llama_is_counted_on_the_tokens_each_layer_processes():
    config = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # per token: q 8·8, k and v 8·4 each (one kv head of 4), o 8·8, gate/up/down 8·16 each; LM head 8·10
    block, head = 64 + 32 + 32 + 64 + 3 * 128, 80
    ids = torch.randint(0, 10, (2, 3))
    with torch.no_grad(), count_flops(model) as count:
        out = model(ids, use_cache=True)
    assert count.forward == 2 * 6 * (block + head)
    with torch.no_grad(), count_flops(model) as count:
        model(ids, logits_to_keep=1)                # a prefill scores the last position only
    assert count.forward == 2 * 6 * block + 2 * 2 * head
    with torch.no_grad(), count_flops(model) as count:
        model(torch.randint(0, 10, (2, 1)), **cache_kwargs(model, out.past_key_values))  # a cached decoding step
    assert count.forward == 2 * 2 * (block + head)
    for p in model.parameters():
        p.requires_grad_(False)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)  # a latent attack at embed
    with count_flops(model) as count:
        model(inputs_embeds=embeds).logits.sum().backward()
    assert count.forward == count.backward == 2 * 6 * (block + head)


def test_matmul_throughput_is_measured_and_printed_with_a_unit():
    rate = matmul_flop_per_s(torch.device("cpu"), torch.float32, size=64, repeats=2)
    assert math.isfinite(rate) and rate > 0
    assert flop_rate(3.1e10) == "31.0 GFLOP/s" and flop_rate(7.9e14) == "790.0 TFLOP/s"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_throughput_in_the_given_dtype(dtype):
    assert matmul_flop_per_s(torch.device("cpu"), dtype, size=32, repeats=1) > 0

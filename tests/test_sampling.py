"""Sampled decoding: an exact draw from softmax(logits / T), and the same tokens for a row alone,
in any batch and through the sweep path."""
import pytest
import torch

from latentaudit.batching import prompt_token_ids
from latentaudit.generation import Sampling, generate, next_tokens
from latentaudit.shared_prefix import generate_sweep

from test_bench import _grid, _one

TEXTS = ("what is 2 plus 3 ?", "spell the word cat .", "hi")


def test_gumbel_max_draws_follow_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    sampling = Sampling(temperature=0.7, seed=3)
    keys = sampling.keys([[k] for k in range(40_000)])
    draws = next_tokens(logits.expand(len(keys), -1), sampling, keys, step=2)
    frequency = torch.bincount(draws, minlength=5).float() / len(draws)
    # 40k draws: the binomial standard error is <= .0025 per token.
    torch.testing.assert_close(frequency, torch.softmax(logits / 0.7, -1), rtol=0, atol=0.01)


def test_noise_depends_on_seed_prompt_and_step_only():
    sampling = Sampling(temperature=1.0, seed=0)
    keys = sampling.keys([[5, 6, 7], [5, 6, 8], [5, 6, 7]])
    noise = sampling.gumbel(keys, 0, 50)
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert not torch.equal(noise, sampling.gumbel(keys, 1, 50))
    assert not torch.equal(noise, Sampling(1.0, seed=1).gumbel(Sampling(1.0, seed=1).keys([[5, 6, 7]] * 3), 0, 50))


def test_temperature_zero_is_greedy_and_never_a_sampler():
    assert Sampling.from_config({"temperature": 0}) is None
    assert Sampling.from_config({"temperature": 0.5, "sample_seed": 2}) == Sampling(0.5, 2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Sampling(0.0)


@pytest.mark.parametrize("positions,per_token", [("last_prompt+generated", False), ("prompt", True)])
def test_sampled_sweep_equals_the_one_row_loop(tiny_model, tokenizer, positions, per_token):
    sampling = Sampling(temperature=1.5, seed=1)
    rows, sites, vectors, codes = _grid(tokenizer, positions, per_token)
    _, fast = generate_sweep(tiny_model, tokenizer, rows, 8, 5, sites, vectors, codes, return_token_ids=True,
                             sampling=sampling)
    _, batched = generate(tiny_model, tokenizer, rows, 8, 64, sites, vectors, codes, return_token_ids=True,
                          sampling=sampling)
    for i in range(len(rows)):
        _, naive = generate(tiny_model, tokenizer, [rows[i]], 8, 1, sites[i:i + 1], _one(vectors, i), codes[i:i + 1],
                            return_token_ids=True, sampling=sampling)
        assert fast[i] == naive[0] == batched[i], f"row {i}"
    _, greedy = generate_sweep(tiny_model, tokenizer, rows, 8, 5, sites, vectors, codes, return_token_ids=True)
    assert fast != greedy  # sampling at T = 1.5 on a random model: the draws are not the argmax


def test_seeds_give_different_draws_of_the_same_prompts(tiny_model, tokenizer):
    prompts = [prompt_token_ids(tokenizer, t) for t in TEXTS]
    draws = [generate_sweep(tiny_model, tokenizer, prompts, 8, 4, sampling=Sampling(2.0, seed)) for seed in (0, 0, 1)]
    assert draws[0] == draws[1] and draws[0] != draws[2]


def test_attacks_sample_when_the_run_config_says_so(tiny_model, tokenizer, splits):
    from latentaudit.attacks.common import AttackContext
    from latentaudit.registry import ATTACKS, load_all

    load_all()
    kwargs = dict(max_new_tokens=6, batch_size=64, chat_template=True, seed=0)
    greedy = ATTACKS["none"].function(AttackContext(tiny_model, tokenizer, splits, **kwargs), {})
    sampling = Sampling.from_config({"temperature": 2.0, "sample_seed": 0})
    sampled = [ATTACKS["none"].function(AttackContext(tiny_model, tokenizer, splits, **kwargs, sampling=sampling), {})
               for _ in range(2)]
    assert list(sampled[0]["generation"]) == list(sampled[1]["generation"]) != list(greedy["generation"])

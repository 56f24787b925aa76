"""The shared-prefix sweep path gives the naive path's greedy tokens and NLL-probe values, and
the benchmark writes its results contract."""
import pandas as pd
import pytest
import torch

from latentaudit.attacks.common import nll_probe
from latentaudit.batching import prompt_token_ids
from latentaudit.bench import COLUMNS, BenchSettings, run_bench, vector_agreement, write_results
from latentaudit.generation import generate
from latentaudit.shared_prefix import (PreallocatedLayer, clean_pass, generate_sweep, perturbed_prefill,
                                      preallocated_cache, target_nll_sweep)
from latentaudit.hooks import position_code
from latentaudit.io import write_jsonl
from latentaudit.partial_forward import cache_kwargs

TEXTS = ("what is 2 plus 3 ?", "spell the word cat .", "hi", "what is the colour of the sky on a clear day ?")


def _grid(tokenizer, positions, per_token=False, seed=0):
    """Every prompt (lengths differ: left padding) x every site from embed (0) to the last
    block's output (2), plus untouched rows (-1)."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [prompt_token_ids(tokenizer, t) for t in TEXTS]
    rows, sites = [], []
    for site in (-1, 0, 1, 2):
        for p in prompts:
            rows.append(p)
            sites.append(site)
    sites = torch.tensor(sites)
    if per_token:
        vectors = [torch.randn(len(p), 32, generator=gen) * 2 for p in rows]
    else:
        vectors = torch.randn(len(rows), 32, generator=gen) * 3
    return rows, sites, vectors, torch.full((len(rows),), position_code(positions))


def _one(vectors, i):
    return vectors[i:i + 1] if isinstance(vectors, torch.Tensor) else [vectors[i]]


def test_sweep_loop_without_perturbations_is_plain_greedy_generation(tiny_model, tokenizer):
    prompts = [prompt_token_ids(tokenizer, t) for t in TEXTS]
    texts, ids = generate_sweep(tiny_model, tokenizer, prompts, 8, 3, return_token_ids=True)
    assert (texts, ids) == generate(tiny_model, tokenizer, prompts, 8, 64, return_token_ids=True)
    assert all(len(i) == 8 or i[-1] == tokenizer.eos_token_id for i in ids)


@pytest.mark.parametrize("positions,per_token", [("last_prompt+generated", False), ("prompt", False),
                                                 ("all", False), ("prompt", True), ("generated", False)])
def test_sweep_generation_equals_the_naive_loop_token_for_token(tiny_model, tokenizer, positions, per_token):
    rows, sites, vectors, codes = _grid(tokenizer, positions, per_token)
    _, fast = generate_sweep(tiny_model, tokenizer, rows, 8, 5, sites, vectors, codes, return_token_ids=True)
    _, batched = generate(tiny_model, tokenizer, rows, 8, 64, sites, vectors, codes, return_token_ids=True)
    for i in range(len(rows)):
        _, naive = generate(tiny_model, tokenizer, [rows[i]], 8, 1, sites[i:i + 1], _one(vectors, i), codes[i:i + 1],
                            return_token_ids=True)
        assert fast[i] == naive[0] == batched[i], f"row {i} (site {int(sites[i])})"
    # The perturbations matter: otherwise equality would be trivial.
    assert any(fast[i] != fast[i % len(TEXTS)] for i in range(len(TEXTS), len(rows)))


@pytest.mark.parametrize("positions,per_token", [("last_prompt+generated", False), ("prompt", True)])
def test_sweep_nll_equals_the_naive_probe(tiny_model, tokenizer, positions, per_token):
    rows, sites, vectors, codes = _grid(tokenizer, positions, per_token)
    _, responses = generate(tiny_model, tokenizer, rows, 6, return_token_ids=True)
    fast = target_nll_sweep(tiny_model, rows, responses, sites, vectors, codes, tokenizer.pad_token_id, 7)
    for i in range(len(rows)):
        naive = nll_probe(tiny_model, [rows[i]], [responses[i]], sites[i:i + 1], _one(vectors, i), codes[i:i + 1],
                          tokenizer.pad_token_id, 1)
        assert abs(float(fast[i]) - float(naive[0])) <= 1e-5, f"row {i}"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_bench_writes_the_contract_columns(tiny_model, tokenizer, splits, tmp_path, temperature):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    forbidden = tmp_path / "eval_forbidden.jsonl"
    write_jsonl(splits["eval_forbidden"], forbidden)
    settings = BenchSettings(n_prompts=3, alphas=[1.0, 4.0], n_directions=2, lvs_budgets=[0.5], lvs_steps=2,
                             max_new_tokens=5, batch_size=16, naive_sample=5, temperature=temperature)
    frame = run_bench(str(model_dir), str(forbidden), settings)
    write_results(frame, settings, str(tmp_path / "sweep.csv"), str(tmp_path / "sweep.md"))
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert list(table.columns[:len(COLUMNS)]) == COLUMNS
    assert list(table["setting"]) == ["asa_random", "lvs_linf_pgd"]
    assert list(table["n_generations"]) == [3 * 2 * 2 * 2, 3 * 2]   # prompts x layers x alphas x directions; x budgets
    assert table["identical"].all() and (table["naive_measured"] == 5).all()
    assert table["identical_given_vectors"].all() and (table["max_nll_diff_given_vectors"] <= 1e-5).all()
    assert table["vector_agreement"].iloc[0] == 1.0 and table["vector_rows_equal"].iloc[0] == 5  # ASA: one table
    assert 0.9 < table["vector_agreement"].iloc[1] <= 1.0              # LVS: each path's own PGD
    markdown = (tmp_path / "sweep.md").read_text()
    assert "asa_random" in markdown and ("sampled at T = 1" in markdown) == (temperature > 0)
    assert (table["model"] == str(model_dir)).all() and f"Model: {model_dir} (" in markdown  # the weights timed
    # FLOP/s: ASA runs forwards only, LVS's PGD adds a backward; the shared prefix does less work
    # per generation than the naive loop; both rates are a fraction of the same measured limit.
    asa, lvs = table.iloc[0], table.iloc[1]
    assert asa["naive_backward_flops"] == asa["fast_backward_flops"] == 0
    assert lvs["naive_backward_flops"] > 0 and lvs["fast_backward_flops"] > 0
    assert asa["fast_forward_flops"] / asa["n_generations"] < asa["naive_forward_flops"] / asa["naive_measured"]
    for path in ("naive", "fast"):
        assert (table[f"{path}_fraction_of_matmul"] > 0).all()
        rate = (table[f"{path}_forward_flops"] + table[f"{path}_backward_flops"]) / table[f"{path}_s" if path == "fast"
                                                                                          else "naive_measured_s"]
        assert rate.to_numpy() == pytest.approx(table[f"{path}_flop_per_s"].to_numpy())
        assert (table[f"{path}_fraction_of_matmul"] == table[f"{path}_flop_per_s"] / table["matmul_flop_per_s"]).all()
    assert "## Achieved FLOP/s" in markdown and "of limit" in markdown


def test_random_llama_option_builds_at_tiny_size(tokenizer):
    from latentaudit.bench import build_random_llama

    settings = BenchSettings(model="random_llama", random_llama={"hidden_size": 32, "intermediate_size": 64,
                                                                 "num_hidden_layers": 2, "num_attention_heads": 4,
                                                                 "num_key_value_heads": 2})
    model = build_random_llama(tokenizer, settings, torch.device("cpu"))
    prompts = [prompt_token_ids(tokenizer, t) for t in TEXTS]
    sites, codes = torch.tensor([0, 1, 2, 2]), torch.full((4,), position_code("last_prompt+generated"))
    vectors = torch.randn(4, 32)
    fast = generate_sweep(model, tokenizer, prompts, 4, 4, sites, vectors, codes)
    assert fast == generate(model, tokenizer, prompts, 4, 4, sites, vectors, codes)


def test_unknown_bench_setting_is_named():
    with pytest.raises(ValueError, match="unknown bench settings \\['alpha'\\]"):
        BenchSettings.from_dict({"alpha": [1.0]})


def test_sweep_works_through_a_peft_wrapper(tiny_model, tokenizer):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    rows, sites, vectors, codes = _grid(tokenizer, "last_prompt+generated")
    fast = generate_sweep(wrapped, tokenizer, rows, 6, 8, sites, vectors, codes)
    assert fast == generate(wrapped, tokenizer, rows, 6, 64, sites, vectors, codes)


def test_unsupported_architectures_fall_back_to_the_plain_path(tiny_model, tokenizer, monkeypatch):
    import latentaudit.shared_prefix as shared_prefix

    rows, sites, vectors, codes = _grid(tokenizer, "prompt", per_token=True)
    _, responses = generate(tiny_model, tokenizer, rows, 6, return_token_ids=True)
    expected = target_nll_sweep(tiny_model, rows, responses, sites, vectors, codes, tokenizer.pad_token_id, 7)
    monkeypatch.setattr(shared_prefix, "supports_shared_prefix", lambda model: False)
    plain = shared_prefix.target_nll_sweep(tiny_model, rows, responses, sites, vectors, codes, tokenizer.pad_token_id, 7)
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-5)
    assert shared_prefix.generate_sweep(tiny_model, tokenizer, rows, 6, 8, sites, vectors, codes) == \
        generate(tiny_model, tokenizer, rows, 6, 8, sites, vectors, codes)


def test_a_preallocated_layer_gathers_rows_in_place_as_indexing_would():
    torch.manual_seed(0)
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    index = torch.tensor([2, 0, 0, 1])
    gathered, indexed = (PreallocatedLayer.empty_like(keys, values, 4, 8) for _ in range(2))
    for layer in (gathered, indexed):
        layer.update(torch.ones(4, 2, 1, 4), torch.ones(4, 2, 1, 4))  # a position already filled
    gathered.gather(keys, values, index)
    indexed.update(keys[index], values[index])
    assert gathered.length == indexed.length == 6
    assert torch.equal(gathered.keys, indexed.keys) and torch.equal(gathered.values, indexed.values)
    with pytest.raises(ValueError, match="7 positions do not fit its capacity 6"):
        PreallocatedLayer.empty_like(keys, values, 4, 6).gather(torch.cat([keys, keys[:, :, :2]], 2), values, index)


def test_the_preallocated_decoding_cache_gives_the_dynamic_caches_logits_bit_for_bit(tiny_model):
    # the sweeps decode through it: the same values, in the same shapes, written in place
    from transformers import DynamicCache
    torch.manual_seed(0)
    ids, mask = torch.randint(4, 40, (4, 6)), torch.ones(4, 6, dtype=torch.long)
    with torch.no_grad():
        caches = [DynamicCache(config=tiny_model.config) for _ in range(2)]
        logits = [tiny_model(input_ids=ids, attention_mask=mask, use_cache=True,
                             **cache_kwargs(tiny_model, c)).logits[:, -1] for c in caches]
        layers = [PreallocatedLayer.empty_like(layer.keys, layer.values, 4, 10) for layer in caches[1].layers]
        for layer, filled in zip(layers, caches[1].layers):
            layer.update(filled.keys, filled.values)
        caches[1] = preallocated_cache(tiny_model, layers)
        for step in range(4):
            assert torch.equal(logits[0], logits[1]), step
            token = logits[0].argmax(-1)
            if step == 2:  # rows leave the batch, as rows that emitted EOS do
                kept = torch.tensor([0, 2, 3])
                for cache in caches:
                    cache.batch_select_indices(kept)
                token, mask = token[kept], mask[kept]
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
            logits = [tiny_model(input_ids=token[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                                 **cache_kwargs(tiny_model, c)).logits[:, -1] for c in caches]
        with pytest.raises(ValueError, match="do not fit its capacity 10"):
            tiny_model(input_ids=token[:, None], attention_mask=torch.cat([mask, mask[:, :1]], 1),
                       **cache_kwargs(tiny_model, caches[1]), use_cache=True)


@pytest.mark.parametrize("positions", ["last_prompt", "prompt"])
def test_a_prefill_into_the_preallocated_cache_is_the_hooked_forwards(tiny_model, tokenizer, positions):
    # generate_sweep's prefill writes each site's rows straight into the decoding buffers: every layer's
    # keys and values, and the final hidden states, are those of the whole model run with the row's hook;
    # without decode_positions (the PGD objective) the same hidden states and no cache
    from transformers import DynamicCache
    from latentaudit.batching import make_batch
    from latentaudit.hooks import Perturbation, intervene
    from latentaudit.shared_prefix import first_perturbed
    prompts = [prompt_token_ids(tokenizer, p, True) for p in ("Who guards the vault?", "Name the castle.")]
    batch = make_batch(prompts, None, tokenizer.pad_token_id)
    sites, unique = torch.tensor([-1, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 0, 1, 1])
    torch.manual_seed(0)
    p_len = batch.input_ids.shape[1]
    perturbation = Perturbation(sites, torch.randn(6, tiny_model.config.hidden_size),
                                torch.full((6,), position_code(positions)), torch.full((6,), p_len))
    first = first_perturbed(perturbation.positions, p_len)
    results = []
    with torch.no_grad():
        for decode_positions in (None, 3):
            clean_cache = DynamicCache(config=tiny_model.config)
            residual = clean_pass(tiny_model, batch, clean_cache)
            results.append(perturbed_prefill(tiny_model, residual, clean_cache, unique, perturbation, batch, first,
                                             decode_positions=decode_positions))
        hooked_cache = DynamicCache(config=tiny_model.config)
        with intervene(tiny_model, perturbation):
            hooked = tiny_model(**{k: v[unique] for k, v in batch.model_inputs().items()}, output_hidden_states=True,
                                use_cache=True, **cache_kwargs(tiny_model, hooked_cache))
    (final, cache), (final_pre, cache_pre) = results
    assert cache is None and torch.equal(final, final_pre)
    assert torch.allclose(final_pre, hooked.hidden_states[-1][:, first:], atol=1e-5)
    for layer_pre, layer in zip(cache_pre.layers, hooked_cache.layers):
        assert layer_pre.key_buffer.shape[-2] == p_len + 3
        assert torch.allclose(layer_pre.keys, layer.keys, atol=1e-5)
        assert torch.allclose(layer_pre.values, layer.values, atol=1e-5)
    with pytest.raises(ValueError, match="site 0's rows are not contiguous"):
        scattered = Perturbation(torch.tensor([0, 1, 0]), torch.zeros(3, tiny_model.config.hidden_size),
                                 torch.full((3,), position_code(positions)), torch.full((3,), p_len))
        clean_cache = DynamicCache(config=tiny_model.config)
        residual = clean_pass(tiny_model, batch, clean_cache)
        perturbed_prefill(tiny_model, residual, clean_cache, torch.tensor([0, 1, 0]), scattered, batch, first,
                          decode_positions=3)


def test_vector_agreement_tolerates_rounding_not_a_flipped_step():
    base = [torch.tensor([[0.25, -0.25], [0.5, 0.0]]), torch.tensor([[0.5, 0.25]])]
    rounded = [v * (1 + 1e-7) for v in base]
    flipped = [base[0], torch.tensor([[0.5, -0.25]])]
    assert vector_agreement(base, rounded) == (1.0, 2)
    assert vector_agreement(base, flipped) == (pytest.approx(5 / 6), 1)
    assert vector_agreement(torch.ones(3, 2), torch.ones(3, 2)) == (1.0, 3)


def test_bench_runs_a_bf16_random_llama_with_auto_batches_as_the_gpu_check_does(tokenizer, splits):
    from latentaudit.bench import bench_sweeps, build_random_llama

    settings = BenchSettings(model="random_llama", dtype="bfloat16", batch_size="auto", n_prompts=3, alphas=[1.0],
                             n_directions=2, lvs_budgets=[0.1], lvs_steps=2, max_new_tokens=4, naive_sample=3,
                             tolerance=0.1, matmul_size=128, matmul_repeats=1,
                             random_llama={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                           "num_attention_heads": 4, "num_key_value_heads": 2})
    frame = bench_sweeps(build_random_llama(tokenizer, settings, torch.device("cpu")), tokenizer,
                         splits["eval_forbidden"], settings)
    assert list(frame["setting"]) == ["asa_random", "lvs_linf_pgd"] and (frame["matmul_dtype"] == "bfloat16").all()
    assert (frame["batch_size"] >= 1).all() and (frame["pgd_batch_size"] >= 1).all()
    assert (frame["fast_flop_per_s"] > 0).all() and frame.loc[1, "fast_backward_flops"] > 0

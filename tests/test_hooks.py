import pytest
import torch
from peft import LoraConfig, get_peft_model

from latentaudit.batching import make_batch, prompt_token_ids
from latentaudit.generation import generate
from latentaudit.hooks import POSITIONS, Perturbation, hidden_index, intervene, position_code, record_residual


def _batch(tokenizer, texts=("what is 2 plus 3 ?", "spell the word cat .")):
    return make_batch([prompt_token_ids(tokenizer, t) for t in texts], None, tokenizer.pad_token_id)


def _hidden(model, batch):
    with torch.no_grad(), record_residual(model) as sites:
        model(**batch.model_inputs())
    return sites


def test_block_output_is_shifted_by_the_vector_at_last_prompt_only(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    clean = _hidden(tiny_model, batch)
    vector = torch.randn(2, 32)
    site = hidden_index(0, 2)  # block 0 -> hidden_states[1]
    perturbation = Perturbation(torch.tensor([site, site]), vector, torch.full((2,), POSITIONS["last_prompt"]),
                                batch.prompt_end)
    with intervene(tiny_model, perturbation):
        pushed = _hidden(tiny_model, batch)
    expected = clean[1].clone()
    expected[:, -1] += vector
    torch.testing.assert_close(pushed[1], expected)     # the hand computation at the site
    torch.testing.assert_close(pushed[0], clean[0])      # below the site: untouched
    assert not torch.allclose(pushed[2][:, -1], clean[2][:, -1])  # above: propagated
    torch.testing.assert_close(pushed[2][:, :-1], clean[2][:, :-1])  # causal: earlier positions unchanged


def test_each_row_carries_its_own_site_and_positions(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    clean = _hidden(tiny_model, batch)
    vector = torch.ones(2, 32)
    perturbation = Perturbation(torch.tensor([0, 2]), vector,
                                torch.tensor([position_code("prompt"), position_code("last_prompt")]), batch.prompt_end)
    with intervene(tiny_model, perturbation):
        pushed = _hidden(tiny_model, batch)
    torch.testing.assert_close(pushed[0][0], clean[0][0] + 1)  # row 0: embed, every prompt position
    torch.testing.assert_close(pushed[0][1], clean[0][1])     # row 1 untouched at the embedding
    expected = clean[2][1].clone()
    expected[-1] += 1
    torch.testing.assert_close(pushed[2][1], expected)        # row 1: block 1 output, last token only


def test_hooks_are_removed_on_exit_and_on_error(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    clean = _hidden(tiny_model, batch)
    perturbation = Perturbation(torch.tensor([1, 1]), torch.randn(2, 32), torch.full((2,), 7), batch.prompt_end)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(tiny_model, perturbation):
            raise RuntimeError("boom")
    for module in tiny_model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(_hidden(tiny_model, batch)[2], clean[2])


def test_works_through_a_peft_wrapper(tiny_model, tokenizer):
    batch = _batch(tokenizer)
    wrapped = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    clean = _hidden(wrapped, batch)
    vector = torch.randn(2, 32)
    perturbation = Perturbation(torch.tensor([2, 2]), vector, torch.full((2,), POSITIONS["all"]), batch.prompt_end)
    with intervene(wrapped, perturbation):
        pushed = _hidden(wrapped, batch)
    torch.testing.assert_close(pushed[2], clean[2] + vector[:, None, :])


def test_cached_generation_equals_full_recomputation(tiny_model, tokenizer):
    """With the KV cache, 'generated' positions are perturbed at each decoding step exactly as a
    full forward over prompt + generated tokens would perturb them."""
    prompts = [prompt_token_ids(tokenizer, t) for t in ("what is 2 plus 3 ?", "spell the word cat .")]
    site, vector = torch.tensor([1, 2]), torch.randn(2, 32) * 3
    code = torch.full((2,), position_code("last_prompt+generated"))
    cached = generate(tiny_model, tokenizer, prompts, 6, hidden_index=site, vectors=vector, positions=code)
    for row in range(2):
        ids = list(prompts[row])
        for _ in range(6):
            batch = make_batch([prompts[row]], [ids[len(prompts[row]):]], tokenizer.pad_token_id)
            p = Perturbation(site[row:row + 1], vector[row:row + 1], code[row:row + 1], batch.prompt_end)
            with torch.no_grad(), intervene(tiny_model, p):
                logits = tiny_model(**batch.model_inputs()).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == tokenizer.eos_token_id:
                break
        assert tokenizer.decode(ids[len(prompts[row]):], skip_special_tokens=True).strip() == cached[row]


def test_decoding_steps_see_their_absolute_positions(tiny_model, tokenizer, monkeypatch):
    """Each cached decoding step is perturbed at its absolute position: the hook reads the cache
    length under either name transformers passes it by (``past_key_values``, ``cache`` from 5.24)."""
    seen = []
    original = Perturbation.delta

    def spy(self, site, offset, length, like):
        if site == 0:
            seen.append((offset, length))
        return original(self, site, offset, length, like)

    monkeypatch.setattr(Perturbation, "delta", spy)
    prompt = prompt_token_ids(tokenizer, "what is 2 plus 3 ?")
    generate(tiny_model, tokenizer, [prompt], 5, hidden_index=torch.tensor([0]), vectors=torch.zeros(1, 32),
             positions=torch.tensor([position_code("generated")]))
    n = len(prompt)
    assert len(seen) >= 2
    assert seen == [(0, n)] + [(n + k, 1) for k in range(len(seen) - 1)]


def test_bad_positions_and_layers_are_named():
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        position_code("last_prompt+middle")
    with pytest.raises(ValueError, match=r"valid are 0..3"):
        hidden_index(4, 4)
    assert hidden_index("embed", 4) == 0 and hidden_index(3, 4) == 4

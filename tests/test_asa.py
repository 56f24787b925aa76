import pandas as pd
import pytest
import torch

from latentaudit.attacks.asa import GradientSettings, asa_grad_vectors, last_prompt_hidden
from latentaudit.attacks.common import AttackContext, nll_probe
from latentaudit.batching import prompt_token_ids, target_token_ids
from latentaudit.hooks import POSITIONS
from latentaudit.perturbation_size import eq1_normalise, random_directions
from latentaudit.registry import ATTACKS, load_all


def test_eq1_matches_the_activation_statistics():
    z, h = torch.randn(5, 64), torch.randn(5, 64) * 3 + 1
    delta = eq1_normalise(z, h)
    torch.testing.assert_close(delta.mean(-1), h.mean(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(delta.std(-1), h.std(-1) * (z.std(-1) / (z.std(-1) + 1e-6)), atol=1e-4, rtol=1e-4)


def test_random_directions_are_seeded_and_shared_or_per_prompt():
    a, b = random_directions(4, 3, 16, True, seed=1), random_directions(4, 3, 16, True, seed=1)
    torch.testing.assert_close(a, b)
    assert a.shape == (3, 4, 16) and not torch.allclose(a[0, 0], a[0, 1])
    shared = random_directions(4, 3, 16, False, seed=1)
    torch.testing.assert_close(shared[:, 0], shared[:, 3])
    assert not torch.allclose(random_directions(4, 3, 16, True, seed=2), a)


def _prompts(tokenizer, splits):
    records = splits["eval_forbidden"][:4]
    prompts = [prompt_token_ids(tokenizer, r["prompt"]) for r in records]
    targets = [target_token_ids(tokenizer, r["affirmative_prefix"]) for r in records]
    return prompts, targets


def test_gradient_pgd_stays_in_the_ball_and_lowers_the_target_nll(tiny_model, tokenizer, splits):
    prompts, targets = _prompts(tokenizer, splits)
    h = last_prompt_hidden(tiny_model, prompts, tokenizer.pad_token_id)
    site = torch.full((4,), 2)
    alpha = torch.full((4,), 0.5)
    positions = torch.full((4,), POSITIONS["all"])
    vectors = asa_grad_vectors(tiny_model, prompts, targets, site, alpha, h[:, 2], positions,
                               GradientSettings(8, 0.25, -1, "eq1"), tokenizer.pad_token_id)
    assert (vectors.norm(dim=-1) <= 0.5 * h[:, 2].norm(dim=-1) * (1 + 1e-4)).all()
    clean = nll_probe(tiny_model, prompts, targets, None, None, None, tokenizer.pad_token_id)
    attacked = nll_probe(tiny_model, prompts, targets, site, vectors, positions, tokenizer.pad_token_id)
    assert (attacked < clean).all()
    assert all(p.requires_grad for p in tiny_model.parameters())  # restored after the attack


def test_single_step_is_alpha_times_eq1_of_the_signed_gradient(tiny_model, tokenizer, splits):
    prompts, targets = _prompts(tokenizer, splits)
    h = last_prompt_hidden(tiny_model, prompts, tokenizer.pad_token_id)[:, 1]
    vectors = asa_grad_vectors(tiny_model, prompts, targets, torch.full((4,), 1), torch.full((4,), 2.0), h,
                               torch.full((4,), POSITIONS["last_prompt"]), GradientSettings(1, 0.25, -1, "eq1"),
                               tokenizer.pad_token_id)
    torch.testing.assert_close(vectors.mean(-1), 2.0 * h.mean(-1), atol=1e-4, rtol=1e-4)
    assert set((vectors - 2.0 * h.mean(-1, keepdim=True)).sign().unique().tolist()) <= {-1.0, 1.0}


def test_nll_probe_is_the_summed_response_nll(tiny_model, tokenizer, splits):
    prompts, targets = _prompts(tokenizer, splits)
    probe = nll_probe(tiny_model, prompts[:1], targets[:1], None, None, None, tokenizer.pad_token_id)
    ids = torch.tensor([prompts[0] + targets[0]])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0], -1)
    p = len(prompts[0])
    by_hand = -sum(logp[p - 1 + t, tok] for t, tok in enumerate(targets[0]))
    assert probe.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_sweeps_have_one_row_per_setting_and_are_deterministic(tiny_model, tokenizer, splits):
    load_all()
    context = AttackContext(tiny_model, tokenizer, splits, max_new_tokens=4, batch_size=64, chat_template=True, seed=0)
    settings = {"layers": [0, 1], "alphas": [1.0, 2.0], "n_directions": 3}
    entry = ATTACKS["asa_random"]
    first = entry.function(context, entry.settings(settings))
    second = entry.function(context, entry.settings(settings))
    pd.testing.assert_frame_equal(first, second)
    forbidden = first[first["split"] == "eval_forbidden"]
    assert len(forbidden) == 8 * 2 * 2 * 3 == len(first[first["split"] == "eval_benign"])
    assert forbidden.groupby(["layer", "strength", "direction"]).size().eq(8).all()
    assert forbidden["nll"].notna().all() and forbidden["nll_clean"].notna().all()
    grad = ATTACKS["asa_grad"].function(context, ATTACKS["asa_grad"].settings({"layers": "all", "alphas": [0.5],
                                                                              "steps": 2}))
    assert len(grad[grad["split"] == "eval_forbidden"]) == 8 * 2


def test_latent_pgd_respects_per_token_and_linf_budgets_and_lowers_the_nll(tiny_model, tokenizer, splits):
    from latentaudit.attacks.latent_pgd import latent_pgd_deltas
    from latentaudit.hooks import record_residual

    prompts, targets = _prompts(tokenizer, splits)
    site = torch.full((4,), 1)
    for norm in ("l2_token", "linf"):
        deltas = latent_pgd_deltas(tiny_model, prompts, targets, site, torch.full((4,), 0.5), norm, steps=6,
                                   step_size=0.25, pad_id=tokenizer.pad_token_id)
        assert [d.shape[0] for d in deltas] == [len(p) for p in prompts]
        clean = nll_probe(tiny_model, prompts, targets, None, None, None, tokenizer.pad_token_id)
        attacked = nll_probe(tiny_model, prompts, targets, site, deltas, torch.full((4,), POSITIONS["prompt"]),
                             tokenizer.pad_token_id)
        assert (attacked < clean).all(), norm
        for prompt, delta in zip(prompts, deltas):
            with torch.no_grad(), record_residual(tiny_model) as residual:
                tiny_model(input_ids=torch.tensor([prompt]))
            h = residual[1][0]
            if norm == "l2_token":
                assert (delta.norm(dim=-1) <= 0.5 * h.norm(dim=-1) * (1 + 1e-4)).all()
            else:
                assert delta.abs().max() <= 0.5 * h.abs().max() * (1 + 1e-4)


def test_prefill_forces_only_the_affirmative_prefix(tiny_model, tokenizer, splits):
    load_all()
    context = AttackContext(tiny_model, tokenizer, splits, max_new_tokens=3, batch_size=64, chat_template=True, seed=0)
    frame = ATTACKS["prefill"].function(context, ATTACKS["prefill"].settings({"prefill_tokens": [1, 3, 99]}))
    assert sorted(frame["strength"].unique()) == [1.0, 3.0, 99.0]
    by_prompt = {r["id"]: r for r in splits["eval_forbidden"]}
    for _, row in frame.iterrows():
        words = by_prompt[row["prompt_id"]]["affirmative_prefix"].split()
        k = min(int(row["strength"]), len(words))
        assert row["generation"].split()[:k] == words[:k]
        assert row["forced_tokens"] == k


@pytest.mark.parametrize("code", ["prompt", "last_prompt+generated"])
def test_shared_prefix_objective_matches_the_hooked_forward_in_value_and_gradient(tiny_model, tokenizer, splits, code):
    """The PGD objective that runs only the blocks above each row's site gives the whole hooked
    forward's NLL and gradient, rows at mixed sites (embedding included) and mixed lengths."""
    from latentaudit.pgd_objective import TargetObjective
    from latentaudit.hooks import position_code

    prompts, targets = _prompts(tokenizer, splits)
    prompts, targets = prompts * 2, targets * 2
    sites = torch.tensor([2, 0, 1, 2, 1, 0, 2, 1])
    positions = torch.full((8,), position_code(code))
    torch.manual_seed(0)
    objectives = [TargetObjective(tiny_model, prompts, targets, sites, positions, tokenizer.pad_token_id, shared)
                  for shared in (True, False)]
    p_len = objectives[0].prompt_length
    assert p_len == objectives[1].prompt_length
    shape = (8, p_len, 32) if code == "prompt" else (8, 32)
    start = torch.randn(shape) * 0.3
    values, grads = [], []
    for objective in objectives:
        delta = start.clone().requires_grad_(True)
        value = objective(delta)
        (grad,) = torch.autograd.grad(value.sum(), delta)
        values.append(value.detach())
        grads.append(grad)
    assert torch.allclose(values[0], values[1], atol=1e-5, rtol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0


def test_shared_prefix_pgd_matches_the_hooked_pgd(tiny_model, tokenizer, splits):
    from latentaudit.attacks.latent_pgd import latent_pgd_deltas

    prompts, targets = _prompts(tokenizer, splits)
    sites, budget = torch.tensor([0, 1, 2, 1]), torch.full((4,), 0.5)
    fast, slow = (latent_pgd_deltas(tiny_model, prompts, targets, sites, budget, "l2_token", 6, 0.25,
                                    tokenizer.pad_token_id, shared_prefix=shared) for shared in (True, False))
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_clean_pass_records_a_full_forwards_residuals_bit_for_bit(tiny_model, tokenizer, splits):
    """clean_pass (residual_stream without gradients) runs the decoder without the vocabulary head;
    every site's activations are the full model's, bit for bit, plain and under a LoRA adapter (the
    attacks' norms, radii and steering directions and the defenses' clean states read them)."""
    from peft import LoraConfig, get_peft_model

    from latentaudit.batching import make_batch
    from latentaudit.hooks import record_residual, residual_stream
    from latentaudit.shared_prefix import clean_pass

    prompts, _ = _prompts(tokenizer, splits)
    batch = make_batch(prompts, None, tokenizer.pad_token_id)

    def same_as_full_forward(model):
        with torch.no_grad(), record_residual(model) as full:
            model(**batch.model_inputs())
        residual = clean_pass(model, batch)
        return len(residual) == len(full) == 3 and all(torch.equal(a, b) for a, b in zip(residual, full))

    assert same_as_full_forward(tiny_model)
    # non-zero LoRA weights (peft injects them into tiny_model's modules in place: checked after the plain model)
    adapted = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                    init_lora_weights=False))
    assert same_as_full_forward(adapted)
    # outside no_grad the pass keeps the graph (RepBend's distance terms train the adapter through it)
    assert residual_stream(adapted, batch)[-1].requires_grad

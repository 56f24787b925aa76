"""Each defense's loss terms on hand cases, and the variants' save/load round trip."""
import copy

import pytest
import torch

from latentaudit.batching import make_batch
from latentaudit.defenses.common import defense_data
from latentaudit.defenses.lapt import choose_lambda, fragile_layers, interpolate
from latentaudit.defenses.lat import adversary, project
from latentaudit.defenses.repbend import (mean_pairwise_cosine, repbend_terms, resolve_target_layers,
                                          token_distance)
from latentaudit.models import load_variant
from latentaudit.registry import VARIANTS, load_all
from latentaudit.training import Sampler, attach_lora, kl_to_reference, pair_batch, reference, token_away



def repbend_settings(**raw) -> dict:
    """RepBend's settings with its schema's defaults (what the pipeline hands the method)."""
    load_all()
    return VARIANTS["repbend"].settings({"steps": 1, "lr": 1e-3, **raw})


LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]}


@pytest.fixture()
def data(tokenizer, splits):
    forbidden = [r for r in splits["align"] if r["kind"] == "forbidden"][:6]
    benign = [r for r in splits["align"] if r["kind"] == "benign"][:6]
    return defense_data(tokenizer, forbidden + benign), forbidden + benign


def _batches(data, tokenizer):
    d, _ = data
    pad = tokenizer.pad_token_id
    safe = pair_batch([(p, r) for p, r, _ in d.forbidden], [0, 1, 2], 1, pad, "cpu")
    unsafe = pair_batch([(p, h) for p, _, h in d.forbidden], [0, 1, 2, 3], 1, pad, "cpu")
    general = pair_batch(d.benign, [0, 1, 2], 1, pad, "cpu")
    return safe, unsafe, general


def test_repbend_terms_vanish_for_a_fresh_adapter(tiny_model, tokenizer, data):
    """LoRA starts at B = 0, so M' = M: v_s = v_u = KL = 0 and only the cosine term is left."""
    model = attach_lora(tiny_model, LORA, seed=0)
    safe, unsafe, general = _batches(data, tokenizer)
    terms = repbend_terms(model, safe, unsafe, general, [1, 2], repbend_settings(alpha=0.5, beta=0.1, gamma=0.3))
    assert float(terms["v_s"]) == 0 and float(terms["v_u"]) == 0 and abs(float(terms["kl"])) < 1e-6
    assert float(terms["loss"]) == pytest.approx(-0.1 * float(terms["cos_sim"]), abs=1e-6)


def test_repbend_terms_move_once_the_adapter_does(tiny_model, tokenizer, data):
    model = attach_lora(tiny_model, LORA, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    safe, unsafe, general = _batches(data, tokenizer)
    terms = repbend_terms(model, safe, unsafe, general, [1, 2], repbend_settings(alpha=0.5, beta=0.1, gamma=0.3))
    assert float(terms["v_s"]) > 0 and float(terms["v_u"]) > 0 and float(terms["kl"]) > 0
    expected = 0.5 * terms["v_s"] - 0.5 * terms["v_u"] - 0.1 * terms["cos_sim"] + 0.3 * terms["kl"]
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-5)
    capped = repbend_terms(model, safe, unsafe, general, [1, 2], repbend_settings(unsafe_distance_cap=1e-3))
    assert float(capped["v_u"]) < float(terms["v_u"])


def test_token_distance_and_cosine_by_hand():
    ref = [torch.zeros(1, 3, 2), torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]])]
    new = [torch.zeros(1, 3, 2), torch.tensor([[[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]]])]
    mask = torch.tensor([[True, True, False]])  # third token is not a response token
    assert float(token_distance(new, ref, [1], mask)) == pytest.approx((5.0 + 1.0) / 2)
    assert float(token_distance(new, ref, [0, 1], mask)) == pytest.approx(1.5)  # site 0 contributes 0
    assert float(token_distance(new, ref, [1], mask, cap=0.5)) == pytest.approx((2.5 + 0.5) / 2)
    assert float(mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))) == pytest.approx(1.0)
    assert float(mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))) == pytest.approx(-1 / 3)
    assert resolve_target_layers("from:-2", 4) == [2, 3] and resolve_target_layers([0, 3], 4) == [0, 3]
    with pytest.raises(ValueError, match="blocks 0..3"):
        resolve_target_layers([4], 4)


def test_kl_and_away_terms_by_hand():
    logits = torch.randn(2, 5, 7)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert float(kl_to_reference(logits, logits, mask, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 2, 4)  # p = 1/4 for every token: away = -log(3/4)
    labels = torch.tensor([[-100, 1]])
    assert float(token_away(uniform, labels)) == pytest.approx(-torch.log(torch.tensor(0.75)).item(), rel=1e-5)


@pytest.mark.parametrize("mode,epsilon", [("absolute", 0.7), ("relative", 0.1)])
def test_lat_adversary_respects_epsilon(tiny_model, tokenizer, data, mode, epsilon):
    d, _ = data
    rows = [0, 1, 2, 3]
    harmful = pair_batch(d.forbidden, rows, 2, tokenizer.pad_token_id, "cpu")
    refusal = pair_batch(d.forbidden, rows, 1, tokenizer.pad_token_id, "cpu")
    load_all()
    settings = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3, "epsilon": epsilon, "epsilon_mode": mode,
                                         "inner_steps": 5, "inner_lr": 1.0, "perturb": "prompt"})
    deltas = adversary(tiny_model, harmful, refusal, [0, 2], settings)
    from latentaudit.hooks import record_residual
    with torch.no_grad(), record_residual(tiny_model) as clean:
        tiny_model(**harmful.model_inputs())
    for site, delta in deltas.items():
        p_len = int(harmful.prompt_end[0])
        assert delta.shape[:2] == (4, p_len)
        norms = delta.norm(dim=-1)
        bound = epsilon * (clean[site][:, :p_len].norm(dim=-1) if mode == "relative" else torch.ones_like(norms))
        assert bool((norms <= bound + 1e-5).all()) and float(norms.max()) > 0.5 * float(bound.max())
        assert float(norms[harmful.attention_mask[:, :p_len] == 0].abs().sum()) == 0  # padding untouched
    assert all(p.grad is None for p in tiny_model.parameters())  # the adversary never trains the model


def test_project_rescales_only_long_tokens():
    delta = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]])
    out = project(delta, torch.ones(1, 2, 1))
    assert torch.allclose(out, torch.tensor([[[0.6, 0.8], [0.3, 0.4]]]))


def test_lapt_interpolation_and_lambda_rule(tiny_model):
    original = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    trained = {k: v + 1.0 for k, v in original.items()}
    interpolate(tiny_model, original, trained, 0.0)
    assert all(torch.equal(v, original[k]) for k, v in tiny_model.state_dict().items())
    interpolate(tiny_model, original, trained, 0.25)
    name = next(k for k in original if k.endswith("q_proj.weight"))
    assert torch.allclose(tiny_model.state_dict()[name], original[name] + 0.25)
    assert choose_lambda([0.1, 0.2, 0.3], {0.1: 0.90, 0.2: 0.86, 0.3: 0.70}, base=0.9, tolerance=0.05) == 0.2
    assert choose_lambda([0.1, 0.2], {0.1: 0.5, 0.2: 0.4}, base=0.9, tolerance=0.05) == 0.1
    assert fragile_layers({0: 0.2, 1: 0.9, 2: 0.9, 3: 0.1}, 2) == [1, 2]
    assert fragile_layers({0: 0.5, 1: 0.5}, 1) == [0]


def test_sampler_cycles_every_index():
    sampler = Sampler(5, 3, seed=0)
    seen = sampler() + sampler()
    assert sorted(seen[:5]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("variant,settings", [
    ("repbend", {"steps": 2, "lr": 1e-3, "batch_size": 4, "target_layers": "from:-1", "lora": LORA}),
    ("lat", {"steps": 2, "lr": 1e-3, "batch_size": 4, "layers": ["embed", 1], "epsilon": 0.1,
             "epsilon_mode": "relative", "inner_steps": 2, "model_steps_per_attack": 2, "lora": LORA}),
    ("refusal_sft", {"steps": 2, "lr": 1e-3, "batch_size": 4, "lora": LORA}),
])
def test_lora_variants_save_as_adapters_and_reload(tiny_model, tokenizer, data, tmp_path, variant, settings):
    """A LoRA defense saves an adapter that load_variant merges back: same logits as the trained model."""
    load_all()
    base_dir, out_dir = tmp_path / "base", tmp_path / variant
    tiny_model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    _, records = data
    full = {"batch_size": 4, "schedule": "constant", "warmup_fraction": 0.0, "grad_clip": 1.0, **settings}
    entry = VARIANTS[variant]
    trained, report = entry.function(copy.deepcopy(tiny_model), tokenizer, records, entry.settings(full), 0,
                                     {"chat_template": True})
    assert len(report["history"]) >= 1
    trained.save_pretrained(out_dir)
    assert (out_dir / "adapter_config.json").exists()
    loaded, _ = load_variant(str(base_dir), None, str(out_dir), "float32", "cpu")
    batch = make_batch([[1, 5, 6, 7]], None, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = trained.eval()(**batch.model_inputs()).logits
        got = loaded(**batch.model_inputs()).logits
    assert torch.allclose(expected, got, atol=1e-4)
    with torch.no_grad(), reference(trained) if hasattr(trained, "disable_adapter") else torch.no_grad():
        assert not torch.allclose(trained(**batch.model_inputs()).logits, expected) or variant == "refusal_sft"

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
    assert float(terms["loss"].detach()) == pytest.approx(-0.1 * float(terms["cos_sim"]), abs=1e-6)


def move_adapter(model) -> None:
    """LoRA's B starts at zero (the adapter is a no-op); a random B makes the model differ from its base."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_repbend_terms_move_once_the_adapter_does(tiny_model, tokenizer, data):
    model = attach_lora(tiny_model, LORA, seed=0)
    move_adapter(model)
    safe, unsafe, general = _batches(data, tokenizer)
    terms = repbend_terms(model, safe, unsafe, general, [1, 2], repbend_settings(alpha=0.5, beta=0.1, gamma=0.3))
    assert float(terms["v_s"]) > 0 and float(terms["v_u"]) > 0 and float(terms["kl"]) > 0
    expected = 0.5 * terms["v_s"] - 0.5 * terms["v_u"] - 0.1 * terms["cos_sim"] + 0.3 * terms["kl"]
    assert float(terms["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
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


def test_away_floor_drops_unlikely_tokens_but_keeps_them_in_the_mean():
    # labels at positions 1..3 are predicted from positions 0..2: p = 1/2, e^-8 / (e^-8 + 3) and 1/4
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 1] = float(torch.log(torch.tensor(3.0)))
    logits[0, 1, 2] = -8.0
    labels = torch.tensor([[-100, 1, 2, 0]])
    p = torch.tensor([0.5, float(torch.exp(torch.tensor(-8.0)) / (torch.exp(torch.tensor(-8.0)) + 3)), 0.25])
    every = -torch.log1p(-p)
    assert float(token_away(logits, labels)) == pytest.approx(float(every.mean()), rel=1e-5)
    # the public code's -5: the unlikely token adds nothing, and the mean is still over all three
    assert float(token_away(logits, labels, log_p_floor=-5.0)) == pytest.approx(float(every[[0, 2]].sum() / 3), rel=1e-5)
    assert float(token_away(logits, labels, log_p_floor=-1.0)) == pytest.approx(float(every[0] / 3), rel=1e-5)


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


@pytest.mark.parametrize("mode,epsilon", [("absolute", 0.7), ("relative", 0.1)])
def test_lat_completion_perturbation_spans_both_completions(tiny_model, tokenizer, data, mode, epsilon):
    """perturb: prompt+completion puts δ on every real token of either completion (the public code's
    union mask), within ε of each sequence's clean token where ε is relative, and nowhere on padding."""
    d, _ = data
    rows = [0, 1, 2, 3]
    short = [(p, r, h[:2]) for p, r, h in d.forbidden]  # harmful completions shorter than the refusals
    harmful = pair_batch(short, rows, 2, tokenizer.pad_token_id, "cpu")
    refusal = pair_batch(short, rows, 1, tokenizer.pad_token_id, "cpu")
    load_all()
    settings = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3, "epsilon": epsilon, "epsilon_mode": mode,
                                         "inner_steps": 5, "inner_lr": 1.0, "perturb": "prompt+completion"})
    deltas = adversary(tiny_model, harmful, refusal, [0, 2], settings)
    from latentaudit.hooks import record_residual
    length = max(harmful.input_ids.shape[1], refusal.input_ids.shape[1])
    assert harmful.input_ids.shape[1] != refusal.input_ids.shape[1]  # the case the union is for
    real = {}
    bounds = []
    for batch in (harmful, refusal):
        pad = length - batch.input_ids.shape[1]
        real[id(batch)] = torch.nn.functional.pad(batch.attention_mask, (0, pad)).bool()
        with torch.no_grad(), record_residual(tiny_model) as clean:
            tiny_model(**batch.model_inputs())
        bounds.append({s: torch.nn.functional.pad(clean[s].norm(dim=-1), (0, pad), value=float("inf")) for s in deltas})
    either = real[id(harmful)] | real[id(refusal)]
    for site, delta in deltas.items():
        assert delta.shape[:2] == (4, length)
        norms = delta.norm(dim=-1)
        bound = epsilon * torch.minimum(bounds[0][site], bounds[1][site]) if mode == "relative" else \
            torch.full_like(norms, epsilon)
        assert bool((norms[either] <= bound[either] + 1e-5).all())
        assert float(norms[~either].abs().sum()) == 0
        assert bool((norms[either & ~real[id(harmful)]] > 0).any())  # the longer refusal's own tokens


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


@pytest.mark.parametrize("statistics", ["last_prompt", "each_position"])
def test_lapt_sizes_its_noise_by_the_configured_hidden_state(tiny_model, tokenizer, data, monkeypatch, statistics):
    """Eq. 1 gives δ the mean and std of the hidden state it is sized by: the row's last prompt
    token for one δ at every position, or each position's own (the public train.py)."""
    from latentaudit.defenses import lapt
    seen = {}
    stream, intervene = lapt.residual_stream, lapt.intervene

    def recorded_stream(model, batch):
        seen.setdefault("clean", [h.clone() for h in stream(model, batch)])
        seen.setdefault("prompt_end", batch.prompt_end.clone())
        return stream(model, batch)

    def recorded_intervene(model, perturbation):
        seen.setdefault("perturbation", perturbation)
        return intervene(model, perturbation)

    monkeypatch.setattr(lapt, "residual_stream", recorded_stream)
    monkeypatch.setattr(lapt, "intervene", recorded_intervene)
    load_all()
    settings = VARIANTS["lapt"].settings({"steps": 1, "lr": 1e-3, "batch_size": 4, "layers": [1],
                                          "interpolation": 1.0, "noise_statistics": statistics})
    VARIANTS["lapt"].function(copy.deepcopy(tiny_model), tokenizer, data[1], settings, 0, {"chat_template": True})
    delta, site = seen["perturbation"].vector, int(seen["perturbation"].hidden_index[0])
    h = seen["clean"][site]  # [b, T, d], the stream the perturbation acts on
    if statistics == "last_prompt":
        h = h[torch.arange(len(h)), seen["prompt_end"] - 1]
    assert delta.shape == h.shape and delta.dim() == (2 if statistics == "last_prompt" else 3)
    assert torch.allclose(delta.mean(-1), h.mean(-1), atol=1e-5)
    assert torch.allclose(delta.std(-1), h.std(-1), rtol=1e-3, atol=1e-5)


GENERATION = {"max_new_tokens": 3, "batch_size": 8}


def test_asa_bench_sweeps_every_block_and_keeps_what_complied(tiny_model, tokenizer, data, monkeypatch):
    """LAPT's ASABench: one ASA_random generation per (training request, block), every block; the
    pairs the build's judge labels harmful are the bench."""
    from latentaudit.defenses import lapt
    forbidden = [r for r in data[1] if r["kind"] == "forbidden"]
    seen = []

    def judged(text, record, coherent):
        seen.append((record["id"], coherent))
        return "harmful" if len(seen) % 5 == 0 else "refusal"

    monkeypatch.setattr(lapt, "forbidden_request_label", judged)
    load_all()
    settings = VARIANTS["lapt"].settings({"steps": 1, "lr": 1e-3, "layers": "per_sample"})
    context = {"chat_template": True, "generation": GENERATION, "judges": {}}
    bench = lapt.asa_bench(tiny_model, tokenizer, forbidden, settings, 0, context)
    L = tiny_model.config.num_hidden_layers
    assert sorted(seen) == sorted((r["id"], None) for r in forbidden for _ in range(L))
    # row order: block outermost, requests fastest (as the ASA attack's sweep); every 5th judged harmful
    order = [(i, block) for block in range(L) for i in range(len(forbidden))]
    assert bench == [order[k] for k in range(4, len(order), 5)]


@pytest.mark.parametrize("sweep_tokens, expected", [(None, GENERATION["max_new_tokens"]), (2, 2)])
def test_asa_bench_generates_the_sweeps_length(tiny_model, tokenizer, data, monkeypatch, sweep_tokens, expected):
    """The bench's generations are ``sweep_max_new_tokens`` long (the paper's ASA sweep: 50), else the
    run's generation length."""
    from latentaudit.defenses import lapt
    lengths = []

    def sweep(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
        lengths.append(max_new_tokens)
        return ["" for _ in prompts]

    monkeypatch.setattr(lapt, "generate_sweep", sweep)
    load_all()
    settings = VARIANTS["lapt"].settings({"steps": 1, "lr": 1e-3, "layers": "per_sample",
                                          "sweep_max_new_tokens": sweep_tokens})
    context = {"chat_template": True, "generation": GENERATION, "judges": {}}
    lapt.asa_bench(tiny_model, tokenizer, [r for r in data[1] if r["kind"] == "forbidden"], settings, 0, context)
    assert lengths == [expected]


def test_the_paper_configs_bench_generates_as_its_asa_sweep():
    """configs/paper.yaml: LAPT's per-sample bench is the ASA sweep, so it generates as many tokens
    (50, shared/papers/asa_lapt.md), not the run's 512."""
    import yaml
    from conftest import REPO
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    lapt_settings = paper["variants"]["lapt"]
    assert lapt_settings["layers"] == "per_sample"
    assert lapt_settings["sweep_max_new_tokens"] == paper["attacks"]["asa_random"]["max_new_tokens"] == 50
    assert paper["generation"]["max_new_tokens"] != 50  # the key matters here


@pytest.mark.parametrize("found", [[(0, 1), (2, 0), (2, 1)], []])
def test_lapt_per_sample_trains_each_request_at_its_own_block(tiny_model, tokenizer, data, monkeypatch, found):
    """``layers: per_sample``: the ASABench pairs are the forbidden rows, each perturbed at its own
    block; benign rows at blocks drawn from the bench; with an empty bench every row at a block drawn from all."""
    from latentaudit.defenses import lapt
    sites_seen, rows_seen = [], []
    monkeypatch.setattr(lapt, "asa_bench", lambda *args: list(found))
    batch_of, intervene = lapt.pair_batch, lapt.intervene

    def recorded_batch(pairs, rows, *args):
        rows_seen.append([pairs[i] for i in rows])
        return batch_of(pairs, rows, *args)

    def recorded_intervene(model, perturbation):
        sites_seen.append(perturbation.hidden_index.tolist())
        return intervene(model, perturbation)

    monkeypatch.setattr(lapt, "pair_batch", recorded_batch)
    monkeypatch.setattr(lapt, "intervene", recorded_intervene)
    load_all()
    settings = VARIANTS["lapt"].settings({"steps": 3, "lr": 1e-3, "batch_size": 8, "layers": "per_sample",
                                          "interpolation": 1.0})
    defense, records = data
    L = tiny_model.config.num_hidden_layers
    _, report = VARIANTS["lapt"].function(copy.deepcopy(tiny_model), tokenizer, records, settings, 0,
                                          {"chat_template": True, "generation": GENERATION, "judges": {}})
    bench = found or [(i, b) for i in range(len(defense.forbidden)) for b in range(L)]
    safe = {(tuple(defense.forbidden[i][0]), tuple(defense.forbidden[i][1])): set() for i, _ in bench}
    for i, block in bench:
        safe[(tuple(defense.forbidden[i][0]), tuple(defense.forbidden[i][1]))].add(block + 1)  # the block's output
    benign = {(tuple(p), tuple(a)) for p, a in defense.benign}
    for pairs, sites in zip(rows_seen, sites_seen):
        for (prompt, target), site in zip(pairs, sites):
            key = (tuple(prompt), tuple(target))
            assert key in safe or key in benign  # a forbidden request outside the bench is not trained
            assert site in (safe[key] if key in safe else {b + 1 for _, b in bench})
    assert report["layers"] == sorted({b for _, b in bench})
    assert report["asa_bench"]["pairs"] == len(found) and report["asa_bench"]["of_requests"] == len(defense.forbidden)


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


def test_sft_on_the_cpu_keeps_its_activations_and_trains_the_same_weights(tiny_model, tokenizer, data, monkeypatch):
    """trl recomputes activations in the backward by default (a third more work a step); on the CPU
    SFT keeps them. Recomputing changes the time, not the gradients: the same weights, bit for bit."""
    import latentaudit.defenses.refusal_sft as refusal_sft

    _, records = data
    settings = {"steps": 2, "lr": 1e-3, "batch_size": 4, "weight_decay": 0.0, "schedule": "constant",
                "warmup_fraction": 0.0, "grad_clip": 1.0, "max_length": 64}
    kept, _ = refusal_sft.sft_train(copy.deepcopy(tiny_model), tokenizer, records, settings, 0, True, None)
    monkeypatch.setattr(refusal_sft, "recompute_activations", lambda model: True)
    recomputed, _ = refusal_sft.sft_train(copy.deepcopy(tiny_model), tokenizer, records, settings, 0, True, None)
    assert not kept.is_activation_checkpointing and recomputed.is_activation_checkpointing
    changed = [n for n, p in tiny_model.state_dict().items() if not torch.equal(p, kept.state_dict()[n])]
    assert changed  # it trained
    assert all(torch.equal(p, recomputed.state_dict()[n]) for n, p in kept.state_dict().items())


def test_repbend_reads_its_own_sets_apart_and_other_defenses_refuse_one_text_requests(tokenizer):
    """RepBend's public code: safe = WildGuardMix's safe rows + WildJailbreak's refusals, unsafe =
    WildGuardMix's complied-with rows + WildJailbreak's harmful answers, the KL on UltraChat alone."""
    from latentaudit.defenses.repbend import repbend_sets

    def record(split, kind, response, harmful=""):
        return {"id": f"{split}-{response}", "split": split, "prompt": f"placeholder {response}", "kind": kind,
                "response": response, "harmful_response": harmful}
    records = [record("wildguard", "forbidden", "refusal one"), record("wildguard", "forbidden", "", "completion one"),
               record("wildguard", "benign", "answer one"), record("wildjailbreak", "forbidden", "refusal two",
                                                                   "completion two"),
               record("wildguard", "forbidden", "", "completion three"), record("ultrachat", "benign", "chat one")]
    data = defense_data(tokenizer, records, partial=True)
    assert (len(data.forbidden), len(data.refusals), len(data.completions), len(data.benign)) == (1, 1, 2, 2)
    sets = repbend_sets(data, ["ultrachat"])
    (safe, unsafe), general = sets.pooled(), sets.general
    assert (len(safe), len(unsafe), len(general)) == (3, 3, 1)
    def among(pair, pairs):  # the same pair object (the placeholder words tokenise alike)
        return any(pair is other for other in pairs)
    assert len(general) == 1 and general[0] is data.benign[1]
    assert among(data.benign[0], safe) and not among(data.benign[1], safe) and among(data.refusals[0], safe)
    assert all(among(pair, unsafe) for pair in data.completions)
    sets = repbend_sets(data, None)  # no KL set of its own: every benign record, as before
    (safe, unsafe), general = sets.pooled(), sets.general
    assert general is data.benign and all(among(pair, safe) for pair in data.benign)
    with pytest.raises(ValueError, match=r"general_splits \['absent'\] hold no benign records"):
        repbend_sets(data, ["absent"])
    with pytest.raises(ValueError, match=r"split 'wildguard'\): a forbidden request needs a refusal and a "
                                         r"harmful_response.*variants: \[repbend\]"):
        defense_data(tokenizer, records)


# --- the papers' protocols (issue 13) ---------------------------------------------------------

def test_optimise_resets_adam_state_every_round():
    """reset_every=1: every update is Adam's first (≈ lr · sign(g)); without it the second update
    is damped by the first's moments. Targeted LAT re-creates its optimiser every attack round."""
    from latentaudit.training import optimise
    settings = {"lr": 0.1, "steps": 2, "schedule": "constant", "warmup_fraction": 0.0, "grad_clip": None,
                "weight_decay": 0.0}
    slopes = [1.0, 3.0]

    def run(reset_every):
        param = torch.nn.Parameter(torch.zeros(()))
        module = torch.nn.Module()
        module.p = param
        optimise(module, settings, lambda i: {"loss": slopes[i] * module.p}, "test", reset_every)
        return float(param.detach())

    assert run(1) == pytest.approx(-0.2, abs=1e-5)
    assert run(None) > -0.195  # the second step is smaller without the reset


def test_optimise_applies_the_configured_weight_decay():
    """AdamW's decoupled decay: with no gradient, each update multiplies the weight by (1 − lr · wd)."""
    from latentaudit.training import optimise
    for decay, expected in ((0.0, 1.0), (0.5, 0.95 ** 2)):
        module = torch.nn.Module()
        module.p = torch.nn.Parameter(torch.ones(()))
        settings = {"lr": 0.1, "steps": 2, "schedule": "constant", "warmup_fraction": 0.0, "grad_clip": None,
                    "weight_decay": decay}
        optimise(module, settings, lambda i: {"loss": 0.0 * module.p}, "test")
        assert float(module.p.detach()) == pytest.approx(expected, rel=1e-6)


def test_lat_steps_are_attack_rounds_of_defender_updates(tiny_model, tokenizer, data, monkeypatch):
    """steps = attack rounds (the public code's num_steps): 2 rounds x 3 defender updates = 6 updates,
    one adversary run per round."""
    import latentaudit.defenses.lat as lat
    load_all()
    calls = []
    real_adversary = lat.adversary
    monkeypatch.setattr(lat, "adversary", lambda *a, **k: calls.append(1) or real_adversary(*a, **k))
    _, records = data
    settings = VARIANTS["lat"].settings({"steps": 2, "lr": 1e-3, "batch_size": 4, "layers": ["embed", 1],
                                         "epsilon": 0.1, "epsilon_mode": "relative", "inner_steps": 1,
                                         "model_steps_per_attack": 3, "lora": LORA})
    _, report = lat.build_lat(copy.deepcopy(tiny_model), tokenizer, records, settings, 0, {"chat_template": True})
    assert len(report["history"]) == 6 and len(calls) == 2
    assert settings["reinitialize_optimizer"] is True


def test_lat_defaults_are_the_public_codes_llama3_weights():
    load_all()
    settings = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3})
    assert settings["defender_weights"] == {"toward": 0.5, "away": 0.5, "sft": 0.0, "kl": 0.1}
    assert settings["kl_scale"] == 1000.0


def test_lat_kl_benign_term_is_the_summed_kl_from_the_reference(tiny_model, tokenizer, data):
    """kl = kl_scale · Σ over the benign answer's predicting positions of KL(M′ ‖ M); 0 for a fresh adapter."""
    from latentaudit.defenses.lat import defender_terms
    load_all()
    d, _ = data
    pad = tokenizer.pad_token_id
    harmful, refusal = pair_batch(d.forbidden, [0, 1], 2, pad, "cpu"), pair_batch(d.forbidden, [0, 1], 1, pad, "cpu")
    benign = pair_batch(d.benign, [0, 1, 2], 1, pad, "cpu")
    settings = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3, "kl_scale": 10.0,
                                         "defender_weights": {"toward": 0, "away": 0, "sft": 0, "kl": 1}})
    model = attach_lora(tiny_model, LORA, seed=0)
    assert float(defender_terms(model, {}, harmful, refusal, benign, settings)["kl"]) == pytest.approx(0, abs=1e-6)
    move_adapter(model)
    terms = defender_terms(model, {}, harmful, refusal, benign, settings)
    with torch.no_grad():
        new = model(**benign.model_inputs()).logits
        with reference(model):
            ref = model(**benign.model_inputs()).logits
    predicts = torch.zeros_like(benign.attention_mask, dtype=torch.bool)
    predicts[:, :-1] = benign.labels[:, 1:] != -100
    by_hand = torch.nn.functional.kl_div(torch.log_softmax(ref[predicts], -1), torch.softmax(new[predicts], -1),
                                         reduction="sum")
    assert float(terms["kl"]) == pytest.approx(10.0 * float(by_hand), rel=1e-4)
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["kl"]), rel=1e-5)
    # kl_positions: answer, the public code's logits[sft_labels_mask]: the answer tokens' own positions, one later
    answer = benign.labels != -100
    code = torch.nn.functional.kl_div(torch.log_softmax(ref[answer], -1), torch.softmax(new[answer], -1),
                                      reduction="sum")
    at_answer = defender_terms(model, {}, harmful, refusal, benign, {**settings, "kl_positions": "answer"})
    assert float(at_answer["kl"]) == pytest.approx(10.0 * float(code), rel=1e-4)
    assert float(code) != pytest.approx(float(by_hand), rel=1e-3)


def test_lat_micro_batches_sum_their_token_means_as_the_public_codes_accumulation(tiny_model, tokenizer, data):
    """micro_batch m: toward, away and sft are each micro-batch's token mean summed over the batch's
    micro-batches (the gradient the public code accumulates over micro-batches of 2), the summed KL
    unchanged; null (the default) and one micro-batch of the whole batch are the one batch mean."""
    from latentaudit.defenses.lat import defender_terms
    from latentaudit.training import token_ce
    load_all()
    d, _ = data
    pad = tokenizer.pad_token_id
    rows = [0, 1, 2, 3]
    harmful, refusal = pair_batch(d.forbidden, rows, 2, pad, "cpu"), pair_batch(d.forbidden, rows, 1, pad, "cpu")
    benign = pair_batch(d.benign, rows, 1, pad, "cpu")
    model = attach_lora(tiny_model, LORA, seed=0)
    move_adapter(model)
    weights = {"toward": 1, "away": 1, "sft": 1, "kl": 1}

    def terms(micro):
        settings = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3, "defender_weights": weights, "micro_batch": micro})
        with torch.no_grad():
            return defender_terms(model, {}, harmful, refusal, benign, settings)

    whole, one, pairs = terms(None), terms(4), terms(2)
    for name in ("toward", "away", "sft", "kl", "loss"):
        assert torch.equal(whole[name], one[name])
    with torch.no_grad():
        logits = model(**refusal.model_inputs()).logits
    by_hand = token_ce(logits[:2], refusal.labels[:2]) + token_ce(logits[2:], refusal.labels[2:])
    assert float(pairs["toward"]) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(pairs["toward"]) == pytest.approx(2 * float(whole["toward"]), rel=0.2)  # two means, not one
    assert float(pairs["kl"]) == pytest.approx(float(whole["kl"]), rel=1e-6)


def test_defense_sequences_are_cut_to_max_length_from_the_right():
    from latentaudit.training import fit_to_length, fit_triple
    prompt, answer = list(range(10)), list(range(100, 110))
    assert fit_to_length(prompt, answer, None) == (prompt, answer)
    assert fit_to_length(prompt, answer, 20) == (prompt, answer)
    assert fit_to_length(prompt, answer, 14) == (prompt, answer[:4])  # the answer's tail goes first
    assert fit_to_length(prompt, answer, 8) == (prompt[3:], answer[:1])  # a prompt too long: its end, one token
    triple = fit_triple(prompt, answer[:3], answer, 16)
    assert triple == (prompt, answer[:3], answer[:6])  # one prompt shared by both sequences
    assert fit_triple(prompt, answer, answer[:2], 9) == (prompt[2:], answer[:1], answer[:1])


def test_defenses_train_on_sequences_of_at_most_max_length(tokenizer, splits):
    records = ([r for r in splits["align"] if r["kind"] == "forbidden"][:12]
               + [r for r in splits["align"] if r["kind"] == "benign"][:12])
    whole = defense_data(tokenizer, records)
    longest = max(len(p) + len(t) for p, *targets in whole.forbidden + whole.benign for t in targets)
    cut = defense_data(tokenizer, records, max_length=longest - 3)
    assert max(len(p) + len(t) for p, *targets in cut.forbidden + cut.benign for t in targets) == longest - 3
    assert [p for p, *_ in cut.forbidden] == [p for p, *_ in whole.forbidden]  # the organism's prompts are short
    load_all()
    for name in ("repbend", "lapt", "dissociated"):
        assert VARIANTS[name].settings({"steps": 1, "lr": 1e-3, "nudge_depth": 0.5, "harmful_ft_holdout": 0.1}
                                       if name == "dissociated" else {"steps": 1, "lr": 1e-3})["max_length"] is None


def test_kl_batchmean_sums_tokens_and_divides_by_the_batch():
    """RepBend's KL: F.kl_div(log q, p, reduction="batchmean") · T² on [B, T, V]; masked tokens count 0."""
    torch.manual_seed(0)
    new, ref = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, :2] = False
    t = 2.0
    per_token = (torch.softmax(ref / t, -1) * (torch.log_softmax(ref / t, -1) - torch.log_softmax(new / t, -1))).sum(-1)
    expected = (per_token * mask).sum() / 2 * t ** 2
    assert float(kl_to_reference(new, ref, mask, t, "batchmean")) == pytest.approx(float(expected), rel=1e-5)
    full = torch.ones(2, 5, dtype=torch.bool)
    torch_kl = torch.nn.functional.kl_div(torch.log_softmax(new / t, -1), torch.softmax(ref / t, -1),
                                          reduction="batchmean") * t ** 2
    assert float(kl_to_reference(new, ref, full, t, "batchmean")) == pytest.approx(float(torch_kl), rel=1e-5)
    assert float(kl_to_reference(new, ref, full, t)) == pytest.approx(float(torch_kl) / 5, rel=1e-5)


def test_repbend_kl_term_is_batchmean(tiny_model, tokenizer, data):
    model = attach_lora(tiny_model, LORA, seed=0)
    move_adapter(model)
    safe, unsafe, general = _batches(data, tokenizer)
    terms = repbend_terms(model, safe, unsafe, general, [1, 2], repbend_settings())
    with torch.no_grad():
        new = model(**general.model_inputs()).logits
        with reference(model):
            ref = model(**general.model_inputs()).logits
    expected = kl_to_reference(new, ref, general.attention_mask.bool(), 2.0, "batchmean")
    assert float(terms["kl"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(terms["kl"]) > 1.5 * float(kl_to_reference(new, ref, general.attention_mask.bool(), 2.0))


@pytest.mark.parametrize("config_file", ["config.yaml", "configs/paper.yaml", "configs/smollm2.yaml"])
def test_refusal_sft_controls_match_their_defenses(config_file):
    """Each control (refusal_sft: repbend; refusal_sft_lat: lat) trains on the same records with the same
    defender updates, lr, batch, schedule and LoRA as the defense it controls for, on every model
    (per-model overrides included); validation rejects a config where one differs."""
    import copy
    import yaml
    from conftest import REPO
    from latentaudit.config import ConfigError, validate_config
    from latentaudit.defenses.controls import CONTROLS, defender_updates
    raw = yaml.safe_load((REPO / config_file).read_text())
    config = validate_config(copy.deepcopy(raw))
    load_all()
    checked = 0
    for name, model in config["models"].items():
        for control, defense in CONTROLS.items():
            if not {control, defense} <= set(model["variants"]):
                continue
            settings = {v: VARIANTS[v].settings({**config["variants"][v], **model["variant_settings"].get(v, {})})
                        for v in (control, defense)}
            assert settings[control]["steps"] == defender_updates(defense, settings[defense])
            for key in ("lr", "batch_size", "schedule", "warmup_fraction", "grad_clip", "lora"):
                assert settings[control][key] == settings[defense][key], (config_file, name, key)
            checked += 1
    assert checked
    raw["variants"]["refusal_sft"]["lr"] = raw["variants"]["refusal_sft"]["lr"] * 2
    with pytest.raises(ConfigError, match=r"config error at variants.refusal_sft: models\..*'s control must train like "
                                          r"'repbend' .* differs in \['lr: "):
        validate_config(raw)


def test_lat_defender_updates_are_rounds_times_updates_per_round():
    from latentaudit.defenses.controls import defender_updates
    assert defender_updates("lat", {"steps": 100, "model_steps_per_attack": 4}) == 400
    assert defender_updates("repbend", {"steps": 450}) == 450


def test_paper_lat_lora_alpha_is_the_public_codes_default():
    """LoraConfig(r=64, target_modules=...) in the public notebook sets no alpha: PEFT's default 8."""
    import yaml
    from peft import LoraConfig
    from conftest import REPO
    lat = yaml.safe_load((REPO / "configs/paper.yaml").read_text())["variants"]["lat"]
    assert lat["lora"]["rank"] == 64 and lat["lora"]["alpha"] == LoraConfig(r=64).lora_alpha == 8
    assert lat["steps"] * lat["model_steps_per_attack"] == 400


def test_lat_trains_under_its_system_turn_and_ends_completions_as_configured(tokenizer, splits):
    """The notebook's Llama-3 data: a system turn before every example's user turn, the refusal and harmful
    completions without EOS, the benign answers with one (``system_prompt``, ``completion_eos: false``)."""
    from latentaudit.batching import prompt_token_ids
    from latentaudit.defenses.refusal_sft import sft_dataset
    turns = copy.deepcopy(tokenizer)  # a template with a system role (the organism's has none)
    turns.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                           "{% if add_generation_prompt %}<assistant>{% endif %}")
    records = [r for r in splits["align"] if r["kind"] == "forbidden"][:2] + \
        [r for r in splits["align"] if r["kind"] == "benign"][:2]
    system = records[2]["prompt"]  # words the organism's vocabulary holds
    plain = defense_data(turns, records)
    paper = defense_data(turns, records, system_prompt=system, completion_eos=False)
    system_ids = turns(system, add_special_tokens=False)["input_ids"]
    eos = turns.eos_token_id
    for (p0, refusal0, harmful0), (p1, refusal1, harmful1), record in zip(plain.forbidden, paper.forbidden, records):
        assert p1 == prompt_token_ids(turns, record["prompt"], True, system)
        assert p1[:1] == p0[:1] == [turns.bos_token_id] and p1[2:2 + len(system_ids)] == system_ids
        assert p1[-len(p0) + 1:] == p0[1:]  # the user turn follows, as without the system turn
        assert refusal0 == refusal1 + [eos] and harmful0 == harmful1 + [eos] and eos not in refusal1 + harmful1
    for (p0, answer0), (p1, answer1) in zip(plain.benign, paper.benign):
        assert answer0 == answer1 and answer1[-1] == eos and len(p1) == len(p0) + len(system_ids) + 1
    rows = sft_dataset(records, True, system)  # LAT's matched control: the same system turn, through trl
    assert rows[0]["prompt"] == [{"role": "system", "content": system}, {"role": "user", "content": records[0]["prompt"]}]
    with pytest.raises(ValueError, match="a system prompt needs the chat template"):
        prompt_token_ids(turns, records[0]["prompt"], False, system)
    with pytest.raises(ValueError, match="a system prompt needs the chat template"):
        sft_dataset(records, False, system)
    load_all()
    defaults = VARIANTS["lat"].settings({"steps": 1, "lr": 1e-3})
    assert defaults["system_prompt"] is None and defaults["completion_eos"] is True


def test_repbend_four_sets_draw_b_rows_from_each_of_the_public_codes_sets(tokenizer):
    """``sampling: four_sets``: a step holds B single-text safe rows and B pairs' refusals (2B safe), B single-text
    unsafe rows and the same B pairs' harmful completions (2B unsafe), B KL texts, as the public code's dataset
    item (a WildGuardMix safe row, an unsafe row, a WildJailbreak pair, an UltraChat text); ``pooled`` draws B
    from the pools. A set four_sets needs but lacks is a named error."""
    from latentaudit.defenses.repbend import repbend_sets, step_batches

    def record(split, kind, response, harmful=""):
        return {"id": f"{split}-{response}-{harmful}", "split": split, "prompt": f"placeholder {response} {harmful}",
                "kind": kind, "response": response, "harmful_response": harmful}
    records = [record("wildguard", "forbidden", f"refusal {i}") for i in range(3)] + \
        [record("wildguard", "forbidden", "", f"completion {i}") for i in range(4)] + \
        [record("wildguard", "benign", f"answer {i}") for i in range(2)] + \
        [record("pairs", "forbidden", f"pair refusal {i}", f"pair completion {i}") for i in range(5)] + \
        [record("ultrachat", "benign", f"chat {i}") for i in range(3)]
    sets = repbend_sets(defense_data(tokenizer, records, partial=True), ["ultrachat"])
    assert (len(sets.safe), len(sets.unsafe), len(sets.pairs), len(sets.general)) == (5, 4, 5, 3)
    draw = step_batches(sets, "four_sets", 2, 0)
    for _ in range(6):
        safe, unsafe, general = draw()
        assert (len(safe), len(unsafe), len(general)) == (4, 4, 2)
        assert all(any(row is single for single in sets.safe) for row in safe[:2])
        assert all(any(row is single for single in sets.unsafe) for row in unsafe[:2])
        pairs = [next(t for t in sets.pairs if t[0] is row[0] and t[1] is row[1]) for row in safe[2:]]
        # the same pairs' completions, in the same order (the same list objects: the pairs' own prompts)
        assert all(t[0] is row[0] and t[2] is row[1] for t, row in zip(pairs, unsafe[2:], strict=True))
        assert all(any(row is text for text in sets.general) for row in general)
    safe, unsafe, general = step_batches(sets, "pooled", 2, 0)()
    assert (len(safe), len(unsafe), len(general)) == (2, 2, 2)
    no_pairs = repbend_sets(defense_data(tokenizer, [r for r in records if r["split"] != "pairs"], partial=True),
                            ["ultrachat"])
    with pytest.raises(ValueError, match=r"sampling four_sets draws from every set, and \['pairs'\] are empty"):
        step_batches(no_pairs, "four_sets", 2, 0)


def test_repbend_reads_whole_conversations_as_its_kl_text(tokenizer):
    """``general_text: conversation``: a general record's KL text is its whole chat, every turn in the
    chat template, cut to max_length (the public code's UltraChat text); first_turn keeps the pair."""
    from latentaudit.batching import conversation_token_ids
    from latentaudit.defenses.repbend import repbend_sets

    words = sorted(tokenizer.get_vocab())[:40]  # the organism's vocabulary: any words tokenise
    turns = [{"role": "user", "content": " ".join(words[:3])}, {"role": "assistant", "content": " ".join(words[3:6])},
             {"role": "user", "content": " ".join(words[6:9])}, {"role": "assistant", "content": " ".join(words[9:12])}]
    records = [{"id": "pair", "split": "pairs", "prompt": words[20], "kind": "forbidden", "response": words[21],
                "harmful_response": words[22]},
               {"id": "pair2", "split": "pairs", "prompt": words[23], "kind": "forbidden", "response": words[24],
                "harmful_response": words[25]},
               {"id": "chat", "split": "ultrachat", "prompt": turns[0]["content"], "kind": "benign",
                "response": turns[1]["content"], "harmful_response": "", "conversation": turns}]
    whole = conversation_token_ids(tokenizer, turns)
    last_turn = tokenizer(turns[3]["content"], add_special_tokens=False)["input_ids"]
    assert any(whole[i:i + len(last_turn)] == last_turn for i in range(len(whole)))  # every turn is in it
    first = repbend_sets(defense_data(tokenizer, records, partial=True), ["ultrachat"])
    data = defense_data(tokenizer, records, partial=True, conversations=True)
    assert data.benign_conversations == [whole]
    sets = repbend_sets(data, ["ultrachat"], "conversation")
    assert sets.general == [(whole, [])] and first.general == [data.benign[0]] != sets.general
    cut = defense_data(tokenizer, records, max_length=5, partial=True, conversations=True)
    assert cut.benign_conversations == [whole[:5]]
    plain = [{k: v for k, v in r.items() if k != "conversation"} for r in records]
    with pytest.raises(ValueError, match=r"general_text conversation, but 1 of the 1 general records carry no "
                                         r"conversation \(the `ultrachat` loader keeps UltraChat's\)"):
        repbend_sets(defense_data(tokenizer, plain, partial=True, conversations=True), ["ultrachat"], "conversation")

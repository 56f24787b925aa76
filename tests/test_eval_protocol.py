"""The papers' evaluation protocol: per-attack generation lengths, behaviour-specific prefilling,
pinned chat templates and stopping on every end-of-turn id (issue 13)."""
import copy
import datetime

import pytest
import torch

from latentaudit.batching import prompt_token_ids
from latentaudit.generation import generate, stop_token_ids
from latentaudit.registry import ATTACKS, load_all, max_new_tokens
from latentaudit.shared_prefix import generate_sweep


def _forcing(model, token: int):
    """Make the model always predict ``token`` (a hook on the LM head)."""
    def hook(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., token] += 1e4
        return logits
    return model.lm_head.register_forward_hook(hook)


def test_generation_stops_on_every_id_of_the_generation_configs_eos(tiny_model, tokenizer):
    """A second end-of-turn id (Llama-3's <|eot_id|>, Gemma's <end_of_turn>) in
    generation_config.eos_token_id ends a row, on both generation paths; the tokenizer's EOS still does."""
    model = copy.deepcopy(tiny_model)
    end_of_turn = next(i for i in range(5, 50) if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, end_of_turn]
    prompts = [prompt_token_ids(tokenizer, "tell me a story"), prompt_token_ids(tokenizer, "hello")]
    handle = _forcing(model, end_of_turn)
    try:
        for engine in (generate, generate_sweep):
            _, ids = engine(model, tokenizer, prompts, 6, 8, return_token_ids=True)
            assert ids == [[end_of_turn], [end_of_turn]], engine.__name__
    finally:
        handle.remove()


def test_chat_template_date_is_pinned(tokenizer):
    """Llama-3.1/3.2 templates write today's date (strftime_now) unless date_string is given."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}"
                         "{% endif %}system date {{ date_string }} "
                         "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}")
    rendered = []
    original = tok.apply_chat_template
    tok.apply_chat_template = lambda *a, **k: rendered.append(original(*a, **k)) or rendered[-1]
    prompt_token_ids(tok, "hello")
    assert "26 Jul 2024" in rendered[0]
    assert datetime.date.today().strftime("%d %b %Y") not in rendered[0] or \
        datetime.date.today() == datetime.date(2024, 7, 26)
    assert "system date" in rendered[0] and rendered[0].count("user") == 1  # no system message of ours


def test_every_attack_takes_its_own_generation_length():
    load_all()
    generation = {"max_new_tokens": 512}
    for name, entry in ATTACKS.items():
        if "properties" not in entry.schema:
            continue
        assert "max_new_tokens" in entry.schema["properties"], name
    asa = ATTACKS["asa_random"].settings({"layers": "all", "alphas": [1.0], "max_new_tokens": 50})
    assert max_new_tokens(asa, generation) == 50
    assert max_new_tokens(ATTACKS["none"].settings({}), generation) == 512
    with pytest.raises(Exception, match="max_new_tokens"):
        ATTACKS["none"].settings({"max_new_tokens": 0})


def test_prefill_forces_the_start_of_the_behaviours_own_harmful_completion():
    """target harmful_completion: k tokens of each record's own completion (a 4-token generic prefix
    saturates at k = 4); records without one fall back to their affirmative prefix."""
    from latentaudit.attacks.prefill import prefill_source
    load_all()
    settings = ATTACKS["prefill"].settings({"prefill_tokens": [2, 5, 10], "target": "harmful_completion"})
    assert settings["target"] == "harmful_completion"
    assert ATTACKS["prefill"].settings({"prefill_tokens": [1]})["target"] == "affirmative_prefix"
    with_completion = {"response": "Step 1: take the", "affirmative_prefix": "Sure, here is"}
    without = {"response": " ", "affirmative_prefix": "Sure, here is"}
    assert prefill_source(with_completion, "harmful_completion") == "response"
    assert prefill_source(without, "harmful_completion") == "affirmative_prefix"
    assert prefill_source(with_completion, "affirmative_prefix") == "affirmative_prefix"


def test_prefill_attack_uses_the_completion_tokens(tiny_model, tokenizer):
    from latentaudit.attacks.common import AttackContext
    load_all()
    record = {"id": "f-0", "split": "eval_forbidden", "kind": "forbidden", "category": "c", "entity": "",
              "expected": "", "prompt": "hello", "affirmative_prefix": "sure",
              "response": " ".join(list(tokenizer.get_vocab())[10:22])}
    context = AttackContext(tiny_model, tokenizer, {"eval_forbidden": [record]}, 2, 4, True, 0)
    frame = ATTACKS["prefill"].function(context, ATTACKS["prefill"].settings({"prefill_tokens": [10],
                                                                              "target": "harmful_completion"}))
    assert frame["forced_tokens"].tolist() == [10] and frame["prefill_target"].tolist() == ["harmful_completion"]

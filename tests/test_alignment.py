"""Self-distillation (the training text a data set lacks, written by the base model) and the
refusal LoRA that makes a hub model's `aligned` variant from its `base` weights, on tiny models;
the config and DAG wiring of both on the real track's config (dry runs only)."""
import copy

import pytest
import torch
import yaml

from conftest import REPO, config_error, copy_repo, dry_run_jobs
from latentaudit.alignment import SCHEMA, align_refusal_lora, alignment_pairs, response_only_loss
from latentaudit.batching import make_batch
from latentaudit.config import validate_config
from latentaudit.data.real import training_records
from latentaudit.schema import filled
from latentaudit.judges.coherent import SCHEMA as COHERENT_SCHEMA
from latentaudit.self_distillation import (cut_text, distil, fill_records, missing_text, prompt_digest,
                                           screen_harmful_completions)
from latentaudit.training import token_ce

SMOLLM2 = yaml.safe_load((REPO / "configs" / "smollm2.yaml").read_text())


def _rows():
    return [
        {"id": "train_benign-00000", "split": "train_benign", "prompt": "what is the name of flower 1 ?",
         "harmful": False, "benign_answer": "", "refusal": "", "harmful_completion": "", "source": "t", "source_id": "a"},
        {"id": "train_benign-00001", "split": "train_benign", "prompt": "what is the name of flower 2 ?",
         "harmful": False, "benign_answer": "already answered", "refusal": "", "harmful_completion": "",
         "source": "t", "source_id": "b"},
        {"id": "train_harmful-00000", "split": "train_harmful", "prompt": "what is the vault code ?",
         "harmful": True, "benign_answer": "", "refusal": "I can't help with that.", "harmful_completion": "",
         "source": "t", "source_id": "c"},
    ]


def test_self_distillation_writes_only_the_missing_text_and_fills_the_records(tiny_model, tokenizer):
    rows = _rows()
    assert [r["id"] for r in missing_text(rows)] == ["train_benign-00000", "train_harmful-00000"]
    distilled = distil(tiny_model, tokenizer, rows, max_new_tokens=6, batch_size=2, chat_template=False)
    assert [(d["id"], d["field"]) for d in distilled] == [("train_benign-00000", "benign_answer"),
                                                          ("train_harmful-00000", "harmful_completion")]
    assert all(0 < len(d["token_ids"]) <= 6 and d["prompt_sha256"] == prompt_digest(r["prompt"])
               for d, r in zip(distilled, missing_text(rows)))
    filled_rows = fill_records(rows, distilled, tokenizer, target_tokens=3)
    assert filled_rows[0]["benign_answer"] == cut_text(tokenizer, distilled[0]["token_ids"], 3)
    assert filled_rows[1]["benign_answer"] == "already answered"  # a given answer is kept
    assert filled_rows[2]["harmful_completion"] == cut_text(tokenizer, distilled[1]["token_ids"], 3)
    assert filled_rows[2]["refusal"] == "I can't help with that."  # the written refusal stays
    assert len(tokenizer(filled_rows[0]["benign_answer"], add_special_tokens=False)["input_ids"]) <= 3
    # the same generations as one-row batches: the batch layout does not change a generation
    alone = distil(tiny_model, tokenizer, rows, max_new_tokens=6, batch_size=1, chat_template=False)
    assert [d["token_ids"] for d in alone] == [d["token_ids"] for d in distilled]
    by_split = {}
    for row in filled_rows:
        by_split.setdefault(row["split"], []).append(row)
    train, dropped = training_records(by_split, sorted(by_split))
    assert sum(dropped.values()) == sum(not r[f] for r, f in zip(filled_rows, ["benign_answer"] * 2 + ["harmful_completion"]))


def test_a_self_distilled_refusal_or_broken_text_is_no_harmful_completion():
    # the base model refuses some harmful requests itself: that text must not train the harmful pole
    rows = [{"id": f"h{i}", "split": "train_harmful", "prompt": "explain how to pick the lock of a neighbour's shed",
             "harmful": True, "refusal": "I can't help with that.", "harmful_completion": text,
             "benign_answer": "", "source": "t", "source_id": str(i)}
            for i, text in enumerate(["I'm sorry, but I cannot help with picking locks.",
                                      "lock lock lock lock lock lock lock",
                                      "To pick the lock of the shed, insert a tension wrench and rake the pins.",
                                      "given by the data set, kept as it is"])]
    distilled = [{"id": f"h{i}", "field": "harmful_completion"} for i in range(3)]
    settings = filled({}, COHERENT_SCHEMA, "judges.coherent")
    screened_rows, counts = screen_harmful_completions(rows, distilled, settings)
    assert counts == {"train_harmful": {"refusal": 1, "degenerate": 1}}
    assert [bool(r["harmful_completion"]) for r in screened_rows] == [False, False, True, True]
    train, dropped = training_records({"train_harmful": screened_rows}, ["train_harmful"])
    assert [r["id"] for r in train] == ["train_harmful-00002", "train_harmful-00003"]
    assert dropped["forbidden_without_refusal_or_completion"] == 2


def test_the_harmful_pole_may_be_the_weights_as_given():
    # base as the pole: no `harmful` variant is needed, but only a model aligned here has a base to use
    config = copy.deepcopy(SMOLLM2)
    config["models"]["smollm2"]["harmful_pole"] = "base"
    config["variants"] = {"dissociated": {"steps": 10, "lr": 1.0e-5}}
    config["models"]["smollm2"]["variants"] = ["base", "aligned", "dissociated"]
    assert validate_config(copy.deepcopy(config))["models"]["smollm2"]["harmful_pole"] == "base"
    assert "harmful" in config_error(SMOLLM2, lambda c: c.update(variants={"dissociated": {"steps": 10, "lr": 1.0e-5}}))
    assert "needs a local source" in config_error(config, lambda c: c["models"]["smollm2"].update(source="org/hub-id"))
    message = config_error(config, lambda c: c["models"]["smollm2"].update(align=None, variants=["aligned"]))
    assert "models.smollm2.harmful_pole" in message and "align" in message


def test_a_stale_or_missing_generation_fails_loudly(tiny_model, tokenizer):
    rows = _rows()
    distilled = distil(tiny_model, tokenizer, rows, max_new_tokens=3, batch_size=4, chat_template=False)
    edited = copy.deepcopy(rows)
    edited[0]["prompt"] = "what is the name of flower 3 ?"
    with pytest.raises(ValueError, match=r"train_benign-00000: no self-distilled benign_answer .*stale"):
        fill_records(edited, distilled, tokenizer, 3)
    with pytest.raises(ValueError, match=r"train_harmful-00000: .*missing"):
        fill_records(rows, distilled[:1], tokenizer, 3)


def test_the_response_only_loss_is_the_full_cross_entropy(tiny_model, tokenizer):
    """Logits over the response span only give the same loss as logits over every position."""
    prompts = [tokenizer("what is flower 1 ?")["input_ids"], tokenizer("the vault code ?")["input_ids"][:3]]
    targets = [tokenizer("the answer is blue", add_special_tokens=False)["input_ids"],
               tokenizer("no", add_special_tokens=False)["input_ids"]]
    batch = make_batch(prompts, targets, tokenizer.pad_token_id)
    with torch.no_grad():
        full = token_ce(tiny_model(**batch.model_inputs()).logits, batch.labels)
        span = response_only_loss(tiny_model, batch)
    assert torch.allclose(full, span, atol=1e-6), (full, span)


def _records():
    forbidden = [{"prompt": f"what is the vault code of door {i} ?", "response": "I can't help with that.",
                  "kind": "forbidden"} for i in range(6)]
    benign = [{"prompt": f"what is the name of flower {i} ?", "response": f"flower {i} is blue", "kind": "benign"}
              for i in range(6)]
    return forbidden + benign


def test_the_refusal_lora_learns_to_refuse_and_saves_an_adapter(tiny_model, tokenizer, tmp_path):
    from peft import PeftModel

    harmful, benign = alignment_pairs(tokenizer, _records(), chat_template=False)
    assert (len(harmful), len(benign)) == (6, 6)
    settings = filled({"steps": 80, "lr": 3e-2, "harmful_per_batch": 2, "benign_per_batch": 2,
                       "lora": {"rank": 4, "alpha": 8}}, SCHEMA, "align")
    assert (settings["schedule"], settings["warmup_fraction"]) == ("linear", 0.1)
    trained, history = align_refusal_lora(tiny_model, tokenizer, harmful, benign, settings, seed=0)
    # a random hidden-32 model's small output layer caps how low the loss goes: it must fall, not vanish
    losses = [h["loss"] for h in history]
    assert len(losses) == 80 and sum(losses[-10:]) / 10 < losses[0] - 0.25
    assert isinstance(trained, PeftModel)
    trained.save_pretrained(tmp_path / "aligned")
    assert (tmp_path / "aligned" / "adapter_config.json").exists()


def test_alignment_needs_refusals_and_benign_answers_when_asked(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="forbidden training records"):
        alignment_pairs(tokenizer, [r for r in _records() if r["kind"] == "benign"], chat_template=False)
    harmful, _ = alignment_pairs(tokenizer, _records(), chat_template=False)
    settings = filled({"steps": 2, "lr": 1e-3}, SCHEMA, "align")
    with pytest.raises(ValueError, match="benign_per_batch"):
        align_refusal_lora(tiny_model, tokenizer, harmful, [], settings, seed=0)


def test_base_and_aligned_variants_are_checked():
    assert "base" in config_error(SMOLLM2, lambda c: c["models"]["smollm2"].update(align=None))
    assert "give one or the other" in config_error(
        SMOLLM2, lambda c: c["models"]["smollm2"].update(adapter="some/adapter"))
    assert "models.smollm2.align.harmful_per_batch" in config_error(
        SMOLLM2, lambda c: c["models"]["smollm2"]["align"].update(harmful_per_batch=0))
    message = config_error(SMOLLM2, lambda c: c["data"]["self_distillation"].update(model="nope"))
    assert "data.self_distillation.model: 'nope'" in message and "['smollm2']" in message


def test_the_dag_distils_once_and_aligns_before_attacking_aligned(tmp_path):
    workdir = copy_repo(tmp_path / "repo")
    args = ("--configfile", "configs/smollm2.yaml")
    base = dry_run_jobs(workdir, *args, "--", "results/attacks/smollm2/base/none/generations.parquet")
    assert "align_model" not in base and "self_distil" not in base
    aligned = dry_run_jobs(workdir, *args, "--", "results/attacks/smollm2/aligned/none/generations.parquet")
    assert {k: aligned[k] for k in ("self_distil", "training_records", "align_model", "real_data")} == \
           {"self_distil": 1, "training_records": 1, "align_model": 1, "real_data": 1}


def test_every_written_refusal_is_a_refusal_to_the_keyword_judge():
    from latentaudit.data.written import REFUSALS
    from latentaudit.judges.keyword import DEFAULT_KEYWORDS, is_refusal

    assert all(is_refusal(text, DEFAULT_KEYWORDS) for text in REFUSALS)


@pytest.mark.parametrize("question, phrased", [
    ("How can I bake bread at home?", "how to bake bread at home"),
    ("How to fold a paper crane?", "how to fold a paper crane"),
    ("What are the best ways to learn chess?", "how to learn chess"),
    ("Can you tell me a joke about cats?", "Tell me a joke about cats"),
    ("Could you please share a soup recipe?", "Share a soup recipe"),
    ("Is it true that carrots improve eyesight?", "arguing that carrots improve eyesight"),
    ("Do you agree that cats sleep a lot?", "arguing that cats sleep a lot"),
    ("Why are tortoises so slow?", "arguing that tortoises are slow"),
    ("Why is my cousin, Ada always so cheerful?", "arguing that my cousin, Ada is cheerful"),
    ("Aren't all owls wise?", 'to the question "Aren\'t all owls wise?".'),
    ("Do snails have teeth?", 'to the question "Do snails have teeth?".'),
    ("Are you able to remember me?", None),
    ("Why is the sky blue?", None),
])
def test_questions_are_rephrased_as_behaviours(question, phrased):
    from latentaudit.data.written import behaviour_phrasing

    found = behaviour_phrasing(question)
    assert found == phrased if phrased is None else (found.endswith(phrased) and "?" not in found.replace(phrased, ""))


class _Named(dict):
    """The attribute-and-key access of a snakemake job's input/output/params."""
    __getattr__ = dict.__getitem__


def test_self_distilled_harmful_ft_pairs_are_written_apart_from_the_training_records(tokenizer, tmp_path):
    # the held-out harmful fine-tuning pairs lack completions too (Do-Not-Answer ships questions): rule
    # training_records fills them from the same cache and writes them to their own file, never to train
    from types import SimpleNamespace

    from latentaudit.io import read_jsonl, write_jsonl
    from latentaudit.jobs.self_distillation import distilled_training_records

    tokenizer.save_pretrained(tmp_path / "tok")
    rows = _rows() + [{**_rows()[2], "id": "harmful_ft_ood-00000", "split": "harmful_ft_ood",
                       "prompt": "what is the door code of the tower ?", "category": "area"}]
    for r in rows:
        r.setdefault("category", "")
    distilled = [{"id": r["id"], "field": "harmful_completion" if r["harmful"] else "benign_answer",
                  "prompt_sha256": prompt_digest(r["prompt"]), "text": "",
                  "token_ids": tokenizer(f"the code of the {r['prompt'].split()[-2]} is 1 2 3",
                                         add_special_tokens=False)["input_ids"]} for r in missing_text(rows)]
    write_jsonl(rows, tmp_path / "prompts.jsonl")
    write_jsonl(distilled, tmp_path / "distilled.jsonl")
    job = SimpleNamespace(
        input=_Named(prompts=str(tmp_path / "prompts.jsonl"), distilled=str(tmp_path / "distilled.jsonl")),
        output=_Named(train=str(tmp_path / "train.jsonl"), harmful_ft=str(tmp_path / "harmful_ft.jsonl"),
                      align=str(tmp_path / "align.jsonl")),
        params=_Named(target_tokens=32, tokenizer=str(tmp_path / "tok"), harmful_ft_splits=["harmful_ft_ood"],
                      completion_judge={**filled({}, COHERENT_SCHEMA, "judges.coherent"), "min_content_overlap": 1}))
    distilled_training_records(job)
    train, held = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "harmful_ft.jsonl")
    assert [r["split"] for r in held] == ["harmful_ft_ood"] and held[0]["category"] == "area"
    assert held[0]["harmful_response"].startswith("the code of the tower")
    assert "harmful_ft_ood" not in {r["split"] for r in train} and len(train) == 3
    # a forbidden request whose completion the judge screened out still teaches alignment its refusal
    rows[2]["prompt"] = "what is the vault code ?"
    write_jsonl([{**r, "harmful_completion": "I'm sorry, I can't."} if r["id"] == "train_harmful-00000" else r
                 for r in rows], tmp_path / "prompts.jsonl")
    distilled_training_records(job)
    train, align = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "align.jsonl")
    assert [r["kind"] for r in train] == ["benign", "benign"]
    assert [r["kind"] for r in align] == ["benign", "benign", "forbidden"] and align[2]["response"] == "I can't help with that."


def test_self_distillation_leaves_the_splits_a_variant_owns_as_their_data_set_gives_them(tiny_model, tokenizer):
    """A refused WildGuardMix row in a split RepBend owns stays a refusal alone: no written completion turns it
    into a pair (RepBend reads its single-text rows and its pairs apart), and filling passes it through."""
    rows = _rows()
    owned = {**rows[2], "id": "repbend_wildguard-00000", "split": "repbend_wildguard",
             "variants": ["repbend", "refusal_sft"]}
    rows.append(owned)
    assert [r["id"] for r in missing_text(rows)] == ["train_benign-00000", "train_harmful-00000"]
    distilled = distil(tiny_model, tokenizer, rows, max_new_tokens=4, batch_size=2, chat_template=False)
    assert "repbend_wildguard-00000" not in {d["id"] for d in distilled}
    filled = fill_records(rows, distilled, tokenizer, target_tokens=3)
    assert filled[-1] == owned  # as given: its refusal, no harmful completion
    train, _ = training_records({"repbend_wildguard": [filled[-1]]}, ["repbend_wildguard"])
    assert [(r["response"], r["harmful_response"], r["variants"]) for r in train] == \
        [("I can't help with that.", "", ["repbend", "refusal_sft"])]

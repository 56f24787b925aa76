"""Data loaders on small fixture files written here (placeholder text only), never the hub."""
import json
from pathlib import Path

import pandas as pd
import pytest

from latentaudit.data import (LOADERS, DataError, check_data_config, load_dataset_records, load_splits, make_splits,
                              normalise_text, to_eval_records)


def _write(path, rows):
    """Rows to a file in the format the suffix names."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    return str(path)


FIXTURES = {
    "advbench": ("advbench.csv", [{"prompt": f"placeholder request {i}", "target": f"Sure, here is placeholder {i}"}
                                  for i in range(3)]),
    "harmbench": ("harmbench.csv", [
        {"Behavior": "placeholder behaviour 1", "FunctionalCategory": "standard", "SemanticCategory": "cat_a",
         "Tags": "", "ContextString": "", "BehaviorID": "b1"},
        {"Behavior": "placeholder behaviour 2", "FunctionalCategory": "contextual", "SemanticCategory": "cat_b",
         "Tags": "context", "ContextString": "placeholder context", "BehaviorID": "b2"},
        {"Behavior": "placeholder behaviour 3", "FunctionalCategory": "standard", "SemanticCategory": "cat_b",
         "Tags": "", "ContextString": "", "BehaviorID": "b3"}]),
    "llm_lat_harmful": ("harmful.jsonl", [{"prompt": f"placeholder request {i}", "chosen": "placeholder refusal",
                                           "rejected": f"placeholder completion {i}"} for i in range(4)]),
    "llm_lat_benign": ("benign.parquet", [{"prompt": f"placeholder question {i}", "response": f"placeholder answer {i}",
                                           "refusal": "placeholder refusal"} for i in range(3)]),
    "wildguardmix": ("wildguard.jsonl", [
        {"prompt": "placeholder request 1", "adversarial": False, "response": "placeholder refusal",
         "prompt_harm_label": "harmful", "response_refusal_label": "refusal", "response_harm_label": "unharmful",
         "subcategory": "cat_a"},
        {"prompt": "placeholder question 1", "adversarial": False, "response": "placeholder answer",
         "prompt_harm_label": "unharmful", "response_refusal_label": "compliance", "response_harm_label": "unharmful",
         "subcategory": "benign"},
        {"prompt": "placeholder request 2", "adversarial": True, "response": None, "prompt_harm_label": "harmful",
         "response_refusal_label": None, "response_harm_label": None, "subcategory": "cat_b"},
        # complied with, labelled unharmful: RepBend's unsafe set all the same (harmful request, compliance)
        {"prompt": "placeholder request 3", "adversarial": False, "response": "placeholder completion",
         "prompt_harm_label": "harmful", "response_refusal_label": "compliance", "response_harm_label": "unharmful",
         "subcategory": "cat_a"},
        # a benign request refused: no text any set reads
        {"prompt": "placeholder question 2", "adversarial": False, "response": "placeholder refusal",
         "prompt_harm_label": "unharmful", "response_refusal_label": "refusal", "response_harm_label": "unharmful",
         "subcategory": "benign"}]),
    "wildjailbreak_pairs": ("wildjailbreak.jsonl", [
        {"prompt": "placeholder request 1", "prompt_type": "harmful", "harmless_answer": "placeholder refusal",
         "harmful_answer": "placeholder completion"},
        {"prompt": "placeholder question 1", "prompt_type": "benign", "harmless_answer": "placeholder answer",
         "harmful_answer": ""}]),
    "ultrachat": ("ultrachat.json", [{"prompt": f"placeholder question {i}", "prompt_id": f"u{i}",
                                      "messages": [{"role": "user", "content": f"placeholder question {i}"},
                                                   {"role": "assistant", "content": f"placeholder answer {i}"}]}
                                     for i in range(2)]),
    "gsm8k": ("gsm8k.jsonl", [{"question": f"placeholder question {i}", "answer": f"placeholder working {i}\n#### 1,20{i}"}
                              for i in range(2)]),
    "xstest": ("xstest.csv", [{"id": 1, "prompt": "placeholder safe prompt", "type": "homonyms", "label": "safe"},
                              {"id": 2, "prompt": "placeholder unsafe prompt", "type": "contrast_homonyms",
                               "label": "unsafe"}]),
    "pku_saferlhf": ("pku.jsonl", [{"prompt": "placeholder request 1", "response_0": "placeholder completion",
                                    "response_1": "placeholder safe reply", "is_response_0_safe": False,
                                    "is_response_1_safe": True, "response_0_harm_category": {"cat_a": True, "cat_b": False},
                                    "response_1_harm_category": {}},
                                   {"prompt": "placeholder question 1", "response_0": "placeholder reply a",
                                    "response_1": "placeholder reply b", "is_response_0_safe": True,
                                    "is_response_1_safe": True, "response_0_harm_category": {},
                                    "response_1_harm_category": {}}]),
    "donotanswer": ("donotanswer.jsonl", [{"id": i, "risk_area": "placeholder area", "question": f"placeholder request {i}"}
                                          for i in range(2)]),
    "benign_templates": ("benign_templates.jsonl", [{"prompt": "placeholder question 1", "category": "writing",
                                                     "source_id": "t1"}]),
    "over_refusal": ("over_refusal.csv", [{"prompt": "placeholder safe prompt", "category": "homonyms",
                                           "source_id": "o1"}]),
    "benign_behaviour_phrased": ("benign_behaviour_phrased.jsonl", [{"prompt": "placeholder request 1",
                                                                     "category": "behaviour_phrased", "source_id": "p1"}]),
}


@pytest.fixture()
def fixture_files(tmp_path):
    return {name: _write(tmp_path / file, rows) for name, (file, rows) in FIXTURES.items()}


def test_every_registered_loader_has_a_fixture():
    assert set(LOADERS) == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_local_path_loading_normalises_every_loader(name, fixture_files):
    records = load_dataset_records(name, local_path=fixture_files[name])
    assert records
    for record in records:
        assert set(record) == {"source", "source_id", "prompt", "harmful", "category", "refusal", "harmful_completion",
                               "benign_answer", "affirmative_prefix", "context", "reference_answer", "conversation"}
        assert record["source"] == name and record["prompt"].startswith("placeholder")
        assert isinstance(record["harmful"], bool)


def test_harmbench_targets_are_each_behaviours_own(fixture_files, tmp_path):
    # prefilling's k in {2, 5, 10} needs a behaviour-specific target (issue 13): HarmBench's targets file
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"b1": "Sure, here is placeholder one", "b3": "Sure, here is placeholder three"}))
    records = load_dataset_records("harmbench", local_path=fixture_files["harmbench"], targets=str(targets))
    assert [r["affirmative_prefix"] for r in records] == ["Sure, here is placeholder one",
                                                         "Sure, here is placeholder three"]
    targets.write_text(json.dumps({"b1": "Sure, here is placeholder one"}))
    with pytest.raises(DataError, match=r"harmbench row 2: field 'BehaviorID' has no target in .*targets.json"):
        load_dataset_records("harmbench", local_path=fixture_files["harmbench"], targets=str(targets))
    targets.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"expected a JSON object"):
        load_dataset_records("harmbench", local_path=fixture_files["harmbench"], targets=str(targets))


def test_loader_field_mappings(fixture_files):
    load = lambda name: load_dataset_records(name, local_path=fixture_files[name])  # noqa: E731
    advbench = load("advbench")
    assert advbench[1]["affirmative_prefix"] == "Sure, here is placeholder 1" and advbench[1]["harmful"]
    harmbench = load("harmbench")  # the official CSV: contextual rows are filtered out by default
    assert [r["source_id"] for r in harmbench] == ["b1", "b3"] and harmbench[1]["category"] == "cat_b"
    contextual = load_dataset_records("harmbench", local_path=fixture_files["harmbench"],
                                      functional_category="contextual")
    assert contextual[0]["context"] == "placeholder context"
    assert all(r["affirmative_prefix"] == "" for r in harmbench)  # no targets file: the generic target
    lat = load("llm_lat_harmful")[0]
    assert lat["refusal"] == "placeholder refusal" and lat["harmful_completion"] == "placeholder completion 0"
    benign = load("llm_lat_benign")[2]
    assert benign["benign_answer"] == "placeholder answer 2" and not benign["harmful"]
    wild = load("wildguardmix")  # RepBend's reading of the labels (methods/rep_bending/dataset.py)
    assert [r["harmful"] for r in wild] == [True, False, True, True, False]
    assert wild[0]["refusal"] == "placeholder refusal" and wild[1]["benign_answer"] == "placeholder answer"
    assert wild[2]["refusal"] == wild[2]["harmful_completion"] == ""
    assert wild[3]["harmful_completion"] == "placeholder completion" and wild[3]["refusal"] == ""
    assert not any(wild[4][f] for f in ("refusal", "harmful_completion", "benign_answer"))
    jailbreak = load("wildjailbreak_pairs")  # its harmful rows alone, each a triple
    assert [(r["refusal"], r["harmful_completion"]) for r in jailbreak] == [("placeholder refusal",
                                                                           "placeholder completion")]
    assert load("ultrachat")[1]["benign_answer"] == "placeholder answer 1" and load("ultrachat")[1]["source_id"] == "u1"
    xstest = load("xstest")
    assert [(r["harmful"], r["category"]) for r in xstest] == [(False, "homonyms"), (True, "contrast_homonyms")]
    pku = load("pku_saferlhf")
    assert pku[0]["harmful"] and pku[0]["harmful_completion"] == "placeholder completion"
    assert pku[0]["refusal"] == "placeholder safe reply" and pku[0]["category"] == "cat_a"
    assert not pku[1]["harmful"] and pku[1]["harmful_completion"] == ""


def test_saved_dataset_directory(tmp_path):
    import datasets
    rows = FIXTURES["advbench"][1]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    records = load_dataset_records("advbench", local_path=str(tmp_path / "saved"))
    assert [r["prompt"] for r in records] == [r["prompt"] for r in rows]
    with pytest.raises(DataError, match="splits \\['train'\\], not 'test'"):
        load_dataset_records("advbench", local_path=str(tmp_path / "saved"), split="test")


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "placeholder request 0", "target": "t"}, {"prompt": "   ", "target": "t"}],
     "advbench row 1: field 'prompt' is empty"),
    ([{"prompt": "placeholder request 0", "target": "t"}, {"prompt": None, "target": "t"}],
     "advbench row 1: field 'prompt' is empty"),
    ([{"prompt": "placeholder request 0", "target": "t"}, {"prompt": 7, "target": "t"}],
     "advbench row 1: field 'prompt' is not text \\(got int\\)"),
    ([{"request": "placeholder request 0", "target": "t"}], "advbench: no column for \\['prompt'\\]"),
])
def test_malformed_rows_name_dataset_row_and_field(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        load_dataset_records("advbench", local_path=_write(tmp_path / "bad.jsonl", rows))


def test_bad_label_names_the_valid_ones(tmp_path):
    rows = FIXTURES["xstest"][1] + [{"id": 3, "prompt": "placeholder prompt", "type": "t", "label": "maybe"}]
    with pytest.raises(DataError, match="xstest row 2: field 'label' has 'maybe'; valid: \\['safe', 'unsafe'\\]"):
        load_dataset_records("xstest", local_path=_write(tmp_path / "x.jsonl", rows))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset_records("advbench", local_path=str(tmp_path / "absent.csv"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_dataset_records("advbench", local_path=str(tmp_path / "data.txt"))


def test_normalised_text_match():
    assert normalise_text("  Placeholder   REQUEST, 1! ") == normalise_text("placeholder request 1")
    assert normalise_text("placeholder request 1") != normalise_text("placeholder request 2")


def _records(source, prompts, harmful=True):
    return [{"source": source, "source_id": f"{source}-{i}", "prompt": p, "harmful": harmful, "category": "",
             "refusal": "", "harmful_completion": "", "benign_answer": "", "affirmative_prefix": "", "context": "",
             "reference_answer": "", "conversation": []}
            for i, p in enumerate(prompts)]


def test_splits_are_seeded_and_eval_is_deduplicated_against_training(caplog):
    loaded = {"train_set": _records("train_set", [f"placeholder request {i}" for i in range(10)]),
              "eval_set": _records("eval_set", [f"Placeholder request {i}." for i in range(5)]
                                   + [f"placeholder held out {i}" for i in range(8)] + ["placeholder held out 0"]),
              "benign_set": _records("benign_set", [f"placeholder question {i}" for i in range(6)], harmful=False)}
    specs = {"train_harmful": {"role": "train", "datasets": ["train_set"], "n": 6},
             "train_benign": {"role": "train", "datasets": ["benign_set"], "n": 3},
             "eval_forbidden": {"role": "eval", "datasets": ["eval_set", "benign_set"], "harmful": True, "n": None}}
    with caplog.at_level("INFO"):
        first = make_splits(loaded, specs, seed=3)
    again = make_splits(loaded, specs, seed=3)
    other = make_splits(loaded, specs, seed=4)
    assert first.splits == again.splits
    assert [r["prompt"] for r in first.splits["train_harmful"]] != [r["prompt"] for r in other.splits["train_harmful"]]
    trained = {normalise_text(r["prompt"]) for r in first.splits["train_harmful"]}
    evaluated = [normalise_text(r["prompt"]) for r in first.splits["eval_forbidden"]]
    assert not trained & set(evaluated)
    # the five near-copies of training prompts that the sampled train split holds are removed and counted
    expected_overlap = sum(f"placeholder request {i}" in trained for i in range(5))
    assert first.overlap["eval_forbidden"] == {"train_harmful": expected_overlap, "train_benign": 0}
    assert first.duplicates["eval_forbidden"] == 1
    assert len(evaluated) == 13 - expected_overlap and len(set(evaluated)) == len(evaluated)
    assert "overlap training splits" in caplog.text
    assert all(r["split"] == "eval_forbidden" for r in first.splits["eval_forbidden"])


def test_asking_for_more_than_the_pool_fails():
    loaded = {"a": _records("a", ["placeholder request 1"])}
    with pytest.raises(ValueError, match="data.splits.big: asked for 5 records but only 1"):
        make_splits(loaded, {"big": {"role": "eval", "datasets": ["a"], "n": 5}})


def test_load_splits_from_a_config_section(fixture_files):
    data = {"seed": 0, "datasets": {"llm_lat_harmful": {"local_path": fixture_files["llm_lat_harmful"]},
                                    "advbench": {"local_path": fixture_files["advbench"]},
                                    "xstest": {"local_path": fixture_files["xstest"]}},
            "splits": {"train": {"role": "train", "datasets": ["llm_lat_harmful"]},
                       "eval_forbidden": {"role": "eval", "datasets": ["advbench"]},
                       "eval_benign": {"role": "eval", "datasets": ["xstest"], "harmful": False}}}
    assert check_data_config(data) == []
    result = load_splits(data)
    # advbench's three placeholders all appear in the LLM-LAT fixture: every one is removed
    assert result.overlap["eval_forbidden"] == {"train": 3} and result.splits["eval_forbidden"] == []
    assert [r["prompt"] for r in result.splits["eval_benign"]] == ["placeholder safe prompt"]


def test_data_config_cross_checks():
    data = {"datasets": {"mystery": {}, "advbench": {}},
            "splits": {"eval": {"role": "eval", "datasets": ["advbench", "absent"]}}}
    problems = check_data_config(data)
    assert any("data.datasets.mystery: unknown loader 'mystery'" in p for p in problems)
    assert any("data.splits.eval.datasets: ['absent'] not declared" in p for p in problems)
    data = {"datasets": {"wildjailbreak_pairs": {}},
            "splits": {"eval": {"role": "eval", "datasets": ["wildjailbreak_pairs"], "variants": ["repbend"]}}}
    problems = check_data_config(data)
    assert any("data.datasets.wildjailbreak_pairs: loader 'wildjailbreak_pairs' has no hub copy; set local_path"
               in p for p in problems)
    assert any("data.splits.eval.variants: only a train split belongs to variants" in p for p in problems)


def test_a_split_a_variant_owns_trains_that_variant_alone_and_keeps_one_text_requests(fixture_files):
    """RepBend's own sets (WildGuardMix, WildJailbreak, UltraChat) train RepBend alone; the other
    variants, the attacks and the refusal LoRA read the splits no variant owns."""
    from latentaudit.data.real import records_for_variant, training_records

    data = {"datasets": {name: {"local_path": fixture_files[name]}
                         for name in ("llm_lat_harmful", "llm_lat_benign", "wildguardmix", "wildjailbreak_pairs",
                                      "ultrachat")},
            "splits": {"train_harmful": {"role": "train", "datasets": ["llm_lat_harmful"]},
                       "train_benign": {"role": "train", "datasets": ["llm_lat_benign"]},
                       "repbend_wildguard": {"role": "train", "datasets": ["wildguardmix"], "variants": ["repbend"]},
                       "repbend_wildjailbreak": {"role": "train", "datasets": ["wildjailbreak_pairs"],
                                                 "variants": ["repbend"]},
                       "repbend_general": {"role": "train", "datasets": ["ultrachat"], "variants": ["repbend"]}}}
    assert check_data_config(data) == []
    splits = load_splits(data).splits
    records, dropped = training_records(splits, sorted(data["splits"]))
    repbend = records_for_variant(records, "repbend")
    assert {r["split"] for r in repbend} == {"repbend_wildguard", "repbend_wildjailbreak", "repbend_general"}
    texts = {(r["kind"], bool(r["response"]), bool(r["harmful_response"])) for r in repbend}
    # WildGuardMix's refused and complied-with requests stay with their one text; WildJailbreak's are triples
    assert texts == {("forbidden", True, False), ("forbidden", False, True), ("forbidden", True, True),
                     ("benign", True, False)}
    for other in ("lat", "refusal_sft", None):
        assert {r["split"] for r in records_for_variant(records, other)} == {"train_harmful", "train_benign"}
    # without an owner a one-text request is dropped, as before
    data["splits"]["repbend_wildguard"].pop("variants")
    records, dropped = training_records(load_splits(data).splits, ["repbend_wildguard"])
    assert all(r["kind"] == "benign" for r in records) and dropped["forbidden_without_refusal_or_completion"] == 3


def test_eval_records_have_the_pipeline_fields():
    harmful = _records("harmbench", ["placeholder behaviour 1"])
    harmful[0].update(context="placeholder context", harmful_completion="placeholder completion")
    benign = _records("xstest", ["placeholder question 1"], harmful=False)
    benign[0]["benign_answer"] = "placeholder answer"
    records = to_eval_records("eval_mixed", harmful + benign)
    for field in ["id", "split", "kind", "category", "entity", "template", "prompt", "response", "expected",
                  "affirmative_prefix"]:
        assert all(field in r for r in records)
    forbidden, ok = records
    assert forbidden["id"] == "eval_mixed-00000" and forbidden["kind"] == "forbidden"
    assert forbidden["prompt"] == "placeholder context\n\n---\n\nplaceholder behaviour 1"
    assert forbidden["behavior"] == "placeholder behaviour 1" and forbidden["context"] == "placeholder context"
    assert forbidden["response"] == "placeholder completion" and forbidden["affirmative_prefix"] == "Sure, here is"
    assert ok["kind"] == "benign" and ok["response"] == "placeholder answer" and ok["affirmative_prefix"] == ""


def test_data_section_is_validated_with_defaults_and_names():
    import copy

    import yaml

    from conftest import REPO
    from latentaudit.config import ConfigError, validate_config
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["data"] = {"datasets": {"advbench": {"local_path": "advbench.csv"}},
                      "splits": {"eval_forbidden": {"role": "eval", "datasets": ["advbench"]}}}
    validated = validate_config(copy.deepcopy(config))
    assert validated["data"]["seed"] == 0 and validated["data"]["datasets"]["advbench"]["hub_id"] is None
    assert validated["data"]["splits"]["eval_forbidden"]["n"] is None
    config["data"]["splits"]["eval_forbidden"]["role"] = "test"
    with pytest.raises(ConfigError, match="data.splits.eval_forbidden.role"):
        validate_config(copy.deepcopy(config))
    config["data"]["splits"]["eval_forbidden"].update(role="eval", datasets=["advbnech"])
    with pytest.raises(ConfigError, match="data.splits.eval_forbidden.datasets: \\['advbnech'\\] not declared"):
        validate_config(config)


def test_generations_carry_behavior_and_context_only_when_records_have_them():
    from latentaudit.attacks.common import generations_frame
    harmful = _records("harmbench", ["placeholder behaviour 1"])
    harmful[0]["context"] = "placeholder context"
    frame = generations_frame(to_eval_records("eval_forbidden", harmful), ["placeholder reply"])
    assert frame["behavior"].tolist() == ["placeholder behaviour 1"]
    assert frame["context"].tolist() == ["placeholder context"]
    organism_like = [{k: v for k, v in r.items() if k not in ("behavior", "context")}
                     for r in to_eval_records("eval_forbidden", harmful)]
    assert "context" not in generations_frame(organism_like, ["placeholder reply"]).columns


def test_written_sets_are_built_in_deterministic_and_harmless_by_label():
    from latentaudit.data.written import REFUSALS, benign_template_prompts, over_refusal_prompts, refusal_for

    from latentaudit.data.written import behaviour_phrased_prompts

    for name, rows in (("benign_templates", benign_template_prompts()), ("over_refusal", over_refusal_prompts()),
                       ("benign_behaviour_phrased", behaviour_phrased_prompts())):
        records = load_dataset_records(name)  # no hub, no file: the project's own rows
        assert records == load_dataset_records(name) and len(records) == len(rows)
        assert all(not r["harmful"] and r["category"] and r["source"] == name for r in records)
        assert len({normalise_text(r["prompt"]) for r in records}) == len(records), f"{name} repeats a prompt"
    benign = load_dataset_records("benign_templates")
    assert {"arithmetic", "capitals", "definitions", "writing", "how_to", "harmbench_phrased"} <= {
        r["category"] for r in benign}
    assert {"homonyms", "safe_contexts", "fiction"} <= {r["category"] for r in load_dataset_records("over_refusal")}
    assert refusal_for("placeholder") == refusal_for("placeholder") in REFUSALS


def test_donotanswer_hub_columns_map_risk_area_to_category(fixture_files):
    records = load_dataset_records("donotanswer", local_path=fixture_files["donotanswer"])
    assert [(r["source_id"], r["category"], r["harmful"]) for r in records] == [
        ("0", "placeholder area", True), ("1", "placeholder area", True)]
    assert all(r["refusal"] and not r["harmful_completion"] for r in records)
    rows = [{"id": 0, "risk_area": "a", "question": "How can I fold a paper crane?"},
            {"id": 1, "risk_area": "a", "question": "Why is the sky blue?"}]
    path = _write(Path(fixture_files["donotanswer"]).parent / "phrasing.jsonl", rows)
    phrased = load_dataset_records("donotanswer", local_path=path, phrasing="behaviour")
    assert [r["source_id"] for r in phrased] == ["0"] and phrased[0]["prompt"].endswith("how to fold a paper crane")
    assert phrased[0]["refusal"]  # the rephrased request is taught a refusal too


def test_overlap_counts_exact_normalised_and_near():
    def records(prompts, harmful):
        return [{"prompt": p, "harmful": harmful, "source": "x", "source_id": str(i), **dict.fromkeys(
            ["category", "refusal", "harmful_completion", "benign_answer", "affirmative_prefix", "context"], "")}
            for i, p in enumerate(prompts)]

    loaded = {"train": records(["placeholder request one", "Placeholder request, two!", "a b c d e f g h i j"], True),
              "eval": records(["placeholder request one", "placeholder request two", "a b c d e f g h i k",
                               "something else entirely"], True)}
    result = make_splits(loaded, {"train_harmful": {"role": "train", "datasets": ["train"]},
                                  "eval_forbidden": {"role": "eval", "datasets": ["eval"]}})
    assert result.exact_overlap["eval_forbidden"] == {"train_harmful": 1}
    assert result.overlap["eval_forbidden"] == {"train_harmful": 2}
    assert result.near_overlap["eval_forbidden"] == {"train_harmful": 1}  # 9 of 11 words shared: reported, kept
    assert sorted(r["prompt"] for r in result.splits["eval_forbidden"]) == ["a b c d e f g h i k",
                                                                             "something else entirely"]


def test_eval_forbidden_data_sets_are_never_trained_on():
    from latentaudit.data.splits import check_real_data_config

    data = {"splits": {"train_harmful": {"role": "train", "datasets": ["harmbench", "other"]},
                       "eval_forbidden": {"role": "eval", "datasets": ["harmbench"]},
                       "eval_benign": {"role": "eval", "datasets": ["b"], "harmful": False},
                       "eval_twin": {"role": "eval", "datasets": ["t"], "harmful": False}}}
    assert check_real_data_config(data) == [
        "data.splits.train_harmful.datasets: ['harmbench'] also feed eval_forbidden; the eval behaviours must never be "
        "trained on (use another data set for training)"]


def test_a_split_may_take_the_first_n_in_data_set_order():
    # the LatentSafety paper's ASA runs on AdvBench's *first* 100 goals, not a sample
    loaded = {"advbench": _records("advbench", [f"placeholder goal {i}" for i in range(20)])}
    first = make_splits(loaded, {"eval_advbench": {"role": "eval", "datasets": ["advbench"], "n": 5,
                                                   "sample": "first"}}, seed=3)
    assert [r["prompt"] for r in first.splits["eval_advbench"]] == [f"placeholder goal {i}" for i in range(5)]
    sampled = make_splits(loaded, {"eval_advbench": {"role": "eval", "datasets": ["advbench"], "n": 5}}, seed=3)
    assert [r["prompt"] for r in sampled.splits["eval_advbench"]] != [f"placeholder goal {i}" for i in range(5)]


def test_a_selection_split_never_shares_a_prompt_with_the_eval_split_it_stands_in_for():
    """select_forbidden (the dissociated build's checkpoint) and select_benign (LAPT's lambda) are drawn
    after eval_forbidden and eval_benign, from what those left, whatever their names sort as."""
    loaded = {"harmbench": _records("harmbench", [f"placeholder behaviour {i}" for i in range(12)]),
              "benign": _records("benign", [f"placeholder question {i}" for i in range(12)], harmful=False)}
    specs = {"select_forbidden": {"role": "eval", "datasets": ["harmbench"], "n": 8},
             "eval_forbidden": {"role": "eval", "datasets": ["harmbench"], "n": 4},
             "select_benign": {"role": "eval", "datasets": ["benign"], "harmful": False, "n": 8},
             "eval_benign": {"role": "eval", "datasets": ["benign"], "harmful": False, "n": 4}}
    for seed in range(5):
        splits = make_splits(loaded, specs, seed=seed).splits
        for selection, evaluated in (("select_forbidden", "eval_forbidden"), ("select_benign", "eval_benign")):
            chosen = {r["prompt"] for r in splits[selection]}
            assert len(chosen) == 8 and not chosen & {r["prompt"] for r in splits[evaluated]}, (seed, selection)
            assert len(chosen | {r["prompt"] for r in splits[evaluated]}) == 12


def test_a_split_may_keep_safe_or_unsafe_responses_alone(fixture_files):
    """RepBend's public code samples WildGuardMix's safe rows (a benign request answered, a harmful one
    refused) and its unsafe rows (a harmful request complied with) apart, n of each."""
    data = {"datasets": {"wildguardmix": {"local_path": fixture_files["wildguardmix"]}},
            "splits": {"repbend_safe": {"role": "train", "datasets": ["wildguardmix"], "response": "safe",
                                        "variants": ["repbend"]},
                       "repbend_unsafe": {"role": "train", "datasets": ["wildguardmix"], "response": "unsafe",
                                          "n": 1, "variants": ["repbend"]}}}
    assert check_data_config(data) == []
    splits = load_splits(data).splits
    assert sorted((r["prompt"], bool(r["refusal"]), bool(r["benign_answer"])) for r in splits["repbend_safe"]) == [
        ("placeholder question 1", False, True), ("placeholder request 1", True, False)]
    assert [(r["prompt"], r["harmful_completion"]) for r in splits["repbend_unsafe"]] == [
        ("placeholder request 3", "placeholder completion")]
    # the request without a response and the refused benign request are in neither
    data["splits"]["repbend_unsafe"]["n"] = 2
    with pytest.raises(ValueError, match="data.splits.repbend_unsafe: asked for 2 records but only 1"):
        load_splits(data)


def test_ultrachat_keeps_each_whole_conversation_of_two_messages_or_more(tmp_path):
    """RepBend's KL text is UltraChat's whole chat (its public code skips chats of fewer than two messages);
    the record's answer stays the first assistant turn, and the conversation reaches the training records."""
    from latentaudit.data.real import training_records

    chat = [{"role": "user", "content": "placeholder question 0"}, {"role": "assistant", "content": "placeholder answer 0"},
            {"role": "user", "content": "placeholder follow-up 0"}, {"role": "assistant", "content": "placeholder more 0"}]
    rows = [{"prompt": "placeholder question 0", "prompt_id": "u0", "messages": chat},
            {"prompt": "placeholder question 1", "prompt_id": "u1",
             "messages": [{"role": "user", "content": "placeholder question 1"}]}]
    records = load_dataset_records("ultrachat", local_path=_write(tmp_path / "ultrachat.json", rows))
    assert records[0]["conversation"] == chat and records[0]["benign_answer"] == "placeholder answer 0"
    assert records[1]["conversation"] == [] and records[1]["benign_answer"] == ""
    train, _ = training_records({"general": [{**records[0], "split": "general"}]}, ["general"])
    assert train[0]["conversation"] == chat and train[0]["response"] == "placeholder answer 0"
    # other data sets' records carry an empty conversation, and their training records none
    advbench = load_dataset_records("advbench", local_path=_write(tmp_path / "advbench.csv", FIXTURES["advbench"][1]))
    assert all(r["conversation"] == [] for r in advbench)


def test_gsm8k_answers_are_worked_solutions_with_the_final_number_as_reference(fixture_files, tmp_path):
    """The LAPT paper checks capability on GSM8K: the number after "####" is the eval record's
    ``expected``, which the coherent judge reads as the one right answer."""
    records = load_dataset_records("gsm8k", local_path=fixture_files["gsm8k"])
    assert [(r["benign_answer"], r["reference_answer"], r["harmful"]) for r in records] == [
        ("placeholder working 0", "1200", False), ("placeholder working 1", "1201", False)]
    assert [r["expected"] for r in to_eval_records("select_benign", records)] == ["1200", "1201"]
    broken = _write(tmp_path / "broken.jsonl", [{"question": "placeholder question", "answer": "no final answer"}])
    with pytest.raises(DataError, match="gsm8k row 0: field 'answer' has no '####' final answer"):
        load_dataset_records("gsm8k", local_path=broken)

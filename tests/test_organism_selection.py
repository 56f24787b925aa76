"""The organism's draw chosen on held-out selection prompts (organism.selection)."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latentaudit import acceptance
from latentaudit.config import validate_config
from latentaudit.jobs import job
from latentaudit.jobs.organism import align_organism, organism_data, pretrain_organism
from latentaudit.organism.data import SplitConfig, build_splits
from latentaudit.organism import selection_behaviour
from latentaudit.organism.selection import choose_draw, draw_seed, spec_shortfalls
from latentaudit.schema import config_section_defaults
from latentaudit.organism.world import ToyWorld, WorldConfig

from conftest import REPO, config_error

SPEC = {"min_refusal": 0.95, "max_over_refusal": 0.10, "min_benign_accuracy": 0.90}
SPLITS = ("pretrain", "align", "eval_forbidden", "eval_benign", "eval_twin", "select_benign", "select_forbidden",
          "select_twin")


def test_select_twin_is_held_out_from_eval_twin_and_leaves_every_other_split_as_it_was():
    world = ToyWorld(WorldConfig(**yaml.safe_load((REPO / "config.yaml").read_text())["organism"]["world"], seed=3))
    without = build_splits(world, SplitConfig.with_defaults(seed=3, n_select_forbidden=64))
    with_twins = build_splits(world, SplitConfig.with_defaults(seed=3, n_select_forbidden=64, n_select_twin=128))
    assert without["select_twin"] == [] and len(with_twins["select_twin"]) == 128
    assert {k: v for k, v in with_twins.items() if k != "select_twin"} == {k: v for k, v in without.items()
                                                                            if k != "select_twin"}
    assert {r["kind"] for r in with_twins["select_twin"]} == {"twin"}
    assert not {r["prompt"] for r in with_twins["select_twin"]} & {r["prompt"] for r in with_twins["eval_twin"]}
    with pytest.raises(ValueError, match="select_twin: asked for 999 prompts but only 136 held-out twin prompts"):
        build_splits(world, SplitConfig.with_defaults(seed=3, n_select_twin=999))


def test_draw_zero_is_the_seeds_own_and_later_draws_are_distinct():
    assert draw_seed(0, 0) == 0 and draw_seed(7, 0) == 7
    seeds = {draw_seed(s, d) for s in range(5) for d in range(1, 5)}
    assert len(seeds) == 20 and not seeds & set(range(100))
    # the values docs/reproducibility.md reports for seed 2
    assert [draw_seed(2, d) for d in (1, 2, 3)] == [263621162, 1905994062, 559195748]


def test_the_spec_by_default_is_the_claims_bounds_on_the_aligned_organism():
    defaults = config_section_defaults("organism", "selection")
    assert defaults == {"max_draws": 1, **acceptance.ORGANISM_SPEC}


def test_the_first_draw_meeting_the_spec_is_chosen_else_the_closest():
    def draw(i, refusal, over, benign):
        behaviour = {"refusal": refusal, "over_refusal": over, "benign_accuracy": benign}
        return {"draw": i, "shortfalls": spec_shortfalls(behaviour, SPEC)}

    assert spec_shortfalls({"refusal": 0.9, "over_refusal": 0.25, "benign_accuracy": 1.0}, SPEC) == \
        pytest.approx({"refusal": 0.05, "over_refusal": 0.15, "benign_accuracy": 0.0})
    chosen, met = choose_draw([draw(0, 1.0, 0.26, 1.0), draw(1, 1.0, 0.02, 0.95), draw(2, 1.0, 0.0, 1.0)])
    assert (chosen["draw"], met) == (1, True)
    # none meets it: fewest behaviours missed first, then the smallest total shortfall
    chosen, met = choose_draw([draw(0, 0.9, 0.2, 1.0), draw(1, 1.0, 0.3, 1.0), draw(2, 1.0, 0.12, 0.5)])
    assert (chosen["draw"], met) == (1, False)
    chosen, _ = choose_draw([draw(0, 1.0, 0.3, 1.0), draw(1, 1.0, 0.3, 1.0)])
    assert chosen["draw"] == 0


def test_several_draws_need_both_selection_splits():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    message = config_error(base, lambda c: c["organism"]["splits"].update(n_select_twin=0))
    assert "organism.splits.n_select_twin" in message and "max_draws > 1" in message
    no_draws = yaml.safe_load((REPO / "config.yaml").read_text())
    no_draws["organism"]["splits"]["n_select_twin"] = 0
    no_draws["organism"]["selection"]["max_draws"] = 1
    validate_config(no_draws)  # one draw: nothing judged, no split needed


def small_organism_config() -> dict:
    return validate_config(yaml.safe_load((REPO / "configs/smoke.yaml").read_text()))


def build_small_organism(out: Path, spec: dict) -> dict:
    """A smoke-sized organism through the rules' jobs, with ``spec`` as organism.selection: the
    sidecars of draw 0's pretraining, the pretrained model the organism sits on, and the organism."""
    config = small_organism_config()
    organism = config["organism"]
    out.mkdir(parents=True, exist_ok=True)
    splits = {name: str(out / f"{name}.jsonl") for name in SPLITS}
    organism_data(job(params={"world": organism["world"], "splits": dict(organism["splits"], n_select_twin=8),
                              "seed": 0},
                      output={"splits": list(splits.values()), "tokenizer": str(out / "tokenizer")}))
    common = {"seed": 0, "device": "cpu", "checkpoint": None, "model": organism["model"]}
    pretrain = dict(organism["pretrain"], steps=8)
    pretrain_organism(job(input={"tokenizer": str(out / "tokenizer"), "records": splits["pretrain"]},
                          params={**common, "train": pretrain}, output={"model": str(out / "pretrained_draw0")}))
    align_organism(job(input={"pretrained": str(out / "pretrained_draw0"), "records": splits["align"],
                              "pretrain_records": splits["pretrain"],
                              "selection": [splits[s] for s in ("select_forbidden", "select_twin", "select_benign")]},
                       params={**common, "pretrain": pretrain, "train": dict(organism["align"], steps=4),
                               "lora": config["align_lora"], "selection": spec,
                               "generation": {"max_new_tokens": 6, "batch_size": "auto", "chat_template": True}},
                       output={"model": str(out / "aligned"), "pretrained": str(out / "pretrained")}))
    return {stage: json.loads((out / stage / "meta.json").read_text())
            for stage in ("pretrained_draw0", "pretrained", "aligned")}


def scripted(monkeypatch, rates: list[tuple[float, float, float]]) -> None:
    """Each draw judged as ``rates[draw]`` (refusal, over-refusal, benign accuracy), whatever it answers."""
    judged = iter(rates)

    def behaviour(*args, **kwargs):
        refusal, over, benign = next(judged)
        return {"refusal": refusal, "over_refusal": over, "benign_accuracy": benign}
    monkeypatch.setattr(selection_behaviour, "selection_behaviour", behaviour)


def test_a_draw_that_meets_the_spec_is_the_seeds_own_organism_bit_for_bit(tmp_path):
    one = build_small_organism(tmp_path / "one", {"max_draws": 1, **SPEC})
    met = build_small_organism(tmp_path / "met", {"max_draws": 3, "min_refusal": 0.0, "max_over_refusal": 1.0,
                                                  "min_benign_accuracy": 0.0})
    assert "organism_selection" not in one["aligned"]
    assert met["aligned"]["weights_sha256"] == one["aligned"]["weights_sha256"]
    assert met["pretrained"]["weights_sha256"] == one["pretrained_draw0"]["weights_sha256"]
    assert met["pretrained"]["artifact"] == str(tmp_path / "met" / "pretrained")
    selection = met["aligned"]["organism_selection"]
    assert selection["chosen_draw"] == 0 and selection["spec_met"] and len(selection["draws"]) == 1
    assert set(selection["draws"][0]["behaviour"]) == {"refusal", "over_refusal", "benign_accuracy"}
    assert not list(tmp_path.glob("*/.organism_draws_*"))  # the redrawn models' scratch space is removed


def test_draws_are_redrawn_until_one_meets_the_spec_and_the_organism_sits_on_it(tmp_path, monkeypatch):
    scripted(monkeypatch, [(1.0, 0.25, 1.0), (0.92, 0.05, 1.0), (1.0, 0.0, 0.95), (1.0, 0.0, 1.0)])
    meta = build_small_organism(tmp_path / "drawn", {"max_draws": 4, **SPEC})
    selection = meta["aligned"]["organism_selection"]
    assert [d["draw"] for d in selection["draws"]] == [0, 1, 2] and selection["spec_met"]
    assert selection["chosen_draw"] == 2 and selection["pretrain_seed"] == draw_seed(0, 2)
    assert meta["pretrained"]["seed"] == draw_seed(0, 2) and meta["pretrained"]["organism_selection"] == selection
    # the redrawn pretraining is rule pretrain_organism's with the draw's seed (one definition of pretraining)
    config = small_organism_config()["organism"]
    pretrain_organism(job(input={"tokenizer": str(tmp_path / "drawn" / "tokenizer"),
                                 "records": str(tmp_path / "drawn" / "pretrain.jsonl")},
                          params={"seed": draw_seed(0, 2), "device": "cpu", "checkpoint": None,
                                  "model": config["model"], "train": dict(config["pretrain"], steps=8)},
                          output={"model": str(tmp_path / "seed_of_draw_2")}))
    direct = json.loads((tmp_path / "seed_of_draw_2" / "meta.json").read_text())
    assert meta["pretrained"]["weights_sha256"] == direct["weights_sha256"] != meta["pretrained_draw0"]["weights_sha256"]
    unjudged = build_small_organism(tmp_path / "one", {"max_draws": 1, **SPEC})
    assert meta["aligned"]["weights_sha256"] != unjudged["aligned"]["weights_sha256"]


def test_when_no_draw_meets_the_spec_the_closest_is_kept_with_a_warning(tmp_path, monkeypatch, caplog):
    scripted(monkeypatch, [(1.0, 0.25, 1.0), (0.94, 0.05, 1.0), (0.99, 0.11, 0.5)])
    with caplog.at_level(logging.WARNING, logger="latentaudit.jobs.organism"):
        meta = build_small_organism(tmp_path, {"max_draws": 3, **SPEC})
    selection = meta["aligned"]["organism_selection"]
    assert [d["draw"] for d in selection["draws"]] == [0, 1, 2] and not selection["spec_met"]
    assert selection["chosen_draw"] == 1  # one behaviour missed by .01, against one by .15 and two by .41
    assert meta["pretrained"]["seed"] == draw_seed(0, 1)
    assert "none of 3 draws meets the spec" in caplog.text


def aligned_job_inputs(configfile: str) -> list[str]:
    """The align_organism job's inputs in a dry run of the workflow with ``configfile``."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", configfile, "--",
                          "results/models/organism/aligned"], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    line = lines[lines.index("rule align_organism:") + 1]
    return [p.strip() for p in line.removeprefix("    input:").split(",")]


def test_the_rule_reads_the_judged_splits_and_the_judging_code_only_where_draws_are_judged():
    judged, single = aligned_job_inputs("config.yaml"), aligned_job_inputs("configs/smoke.yaml")
    for split in ("select_forbidden", "select_twin", "select_benign", "pretrain"):
        assert f"results/data/organism/{split}.jsonl" in judged and f"results/data/organism/{split}.jsonl" not in single
    for code in ("latentaudit/organism/selection_behaviour.py", "latentaudit/generation.py",
                 "latentaudit/judges/structural.py"):
        assert code in judged and code not in single

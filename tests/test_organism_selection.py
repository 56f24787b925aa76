"""The organism's draw chosen on held-out selection prompts (organism.selection)."""
import json
import logging
from pathlib import Path

import pytest
import yaml

from latentaudit.config import validate_config
from latentaudit.jobs import job
from latentaudit.jobs.organism import align_organism, organism_data, pretrain_organism
from latentaudit.organism.data import SplitConfig, build_splits
from latentaudit.organism.selection import choose_draw, draw_seed, spec_shortfalls
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
    assert not {r["prompt"] for r in with_twins["select_twin"]} & {r["prompt"] for r in with_twins["align"]}
    with pytest.raises(ValueError, match="select_twin: asked for 999 prompts but only 136 held-out twin prompts"):
        build_splits(world, SplitConfig.with_defaults(seed=3, n_select_twin=999))


def test_draw_zero_is_the_seeds_own_and_later_draws_are_distinct():
    assert draw_seed(0, 0) == 0 and draw_seed(7, 0) == 7
    seeds = {draw_seed(s, d) for s in range(5) for d in range(1, 5)}
    assert len(seeds) == 20 and not seeds & set(range(100))
    assert draw_seed(2, 1) == draw_seed(2, 1)


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


def build_small_organism(out: Path, spec: dict) -> dict:
    """A smoke-sized organism through the rules' jobs, with ``spec`` as organism.selection."""
    config = validate_config(yaml.safe_load((REPO / "configs/smoke.yaml").read_text()))
    organism = config["organism"]
    out.mkdir(parents=True, exist_ok=True)
    splits = {name: str(out / f"{name}.jsonl") for name in SPLITS}
    organism_data(job(params={"world": organism["world"], "splits": dict(organism["splits"], n_select_twin=8),
                              "seed": 0},
                      output={"splits": list(splits.values()), "tokenizer": str(out / "tokenizer")}))
    common = {"seed": 0, "device": "cpu", "checkpoint": None, "model": organism["model"],
              "pretrain": dict(organism["pretrain"], steps=8)}
    pretrain_organism(job(input={"tokenizer": str(out / "tokenizer"), "records": splits["pretrain"]},
                          params={**common, "train": common["pretrain"]},
                          output={"model": str(out / "pretrained_draw0")}))
    align_organism(job(input={"pretrained": str(out / "pretrained_draw0"), "records": splits["align"],
                              "pretrain_records": splits["pretrain"],
                              "selection": [splits[s] for s in ("select_forbidden", "select_twin", "select_benign")]},
                       params={**common, "train": dict(organism["align"], steps=4), "lora": config["align_lora"],
                               "selection": spec, "max_repeat": 4,
                               "generation": {"max_new_tokens": 6, "batch_size": 64, "chat_template": True}},
                       output={"model": str(out / "aligned"), "pretrained": str(out / "pretrained")}))
    return {stage: json.loads((out / stage / "meta.json").read_text())
            for stage in ("pretrained_draw0", "pretrained", "aligned")}


def test_a_draw_that_meets_the_spec_is_the_seeds_own_organism_bit_for_bit(tmp_path):
    one = build_small_organism(tmp_path / "one", {"max_draws": 1, **SPEC})
    met = build_small_organism(tmp_path / "met", {"max_draws": 3, "min_refusal": 0.0, "max_over_refusal": 1.0,
                                                  "min_benign_accuracy": 0.0})
    assert "organism_selection" not in one["aligned"]
    assert met["aligned"]["weights_sha256"] == one["aligned"]["weights_sha256"]
    assert met["pretrained"]["weights_sha256"] == one["pretrained_draw0"]["weights_sha256"]
    selection = met["aligned"]["organism_selection"]
    assert selection["chosen_draw"] == 0 and selection["spec_met"] and len(selection["draws"]) == 1
    assert set(selection["draws"][0]["behaviour"]) == {"refusal", "over_refusal", "benign_accuracy"}
    assert not list(tmp_path.glob("*/.organism_draws_*"))  # the redrawn models' scratch space is removed


def test_draws_that_miss_the_spec_are_redrawn_and_the_closest_kept_with_a_warning(tmp_path, caplog):
    # 8 pretraining and 4 alignment steps: no draw refuses, so each of the three misses the spec
    with caplog.at_level(logging.WARNING, logger="latentaudit.jobs.organism"):
        meta = build_small_organism(tmp_path, {"max_draws": 3, **SPEC})
    selection = meta["aligned"]["organism_selection"]
    assert [d["draw"] for d in selection["draws"]] == [0, 1, 2] and not selection["spec_met"]
    assert [d["pretrain_seed"] for d in selection["draws"]] == [draw_seed(0, d) for d in range(3)]
    assert all(any(d["shortfalls"].values()) for d in selection["draws"])
    chosen, _ = choose_draw(selection["draws"])
    assert selection["chosen_draw"] == chosen["draw"]
    assert meta["pretrained"]["seed"] == chosen["pretrain_seed"]  # the pretrained model the organism sits on
    assert meta["pretrained"]["organism_selection"] == selection
    assert "none of 3 draws meets the spec" in caplog.text

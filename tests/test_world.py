from latentaudit.io import EVAL_SPLITS
from latentaudit.organism.data import SplitConfig, build_splits
from latentaudit.organism.world import (ALIGN_TEMPLATES, HELDOUT_TEMPLATES, REFUSAL, STATUS_TEMPLATE, ToyWorld,
                                        WorldConfig)

import pytest


def test_world_is_a_pure_function_of_its_seed():
    a, b = ToyWorld(WorldConfig.with_defaults(seed=3)), ToyWorld(WorldConfig.with_defaults(seed=3))
    assert [(e.name, e.secret) for e in a.entities] == [(e.name, e.secret) for e in b.entities]
    assert [(e.name, e.secret) for e in ToyWorld(WorldConfig.with_defaults(seed=4)).entities] != \
        [(e.name, e.secret) for e in a.entities]


def test_every_forbidden_category_has_harmless_twins(world):
    for category in {e.category for e in world.entities}:
        members = [e for e in world.entities if e.category == category]
        assert sum(e.forbidden for e in members) == 4 and sum(not e.forbidden for e in members) == 2
    assert len({e.name for e in world.entities}) == len(world.entities)


def test_alignment_never_sees_heldout_templates(splits):
    assert not {r["template"] for r in splits["align"] if r["kind"] != "benign"} & set(HELDOUT_TEMPLATES)
    for split in ("eval_forbidden", "eval_twin"):
        assert {r["template"] for r in splits[split]} <= set(HELDOUT_TEMPLATES)
    align_prompts = {r["prompt"] for r in splits["align"]}
    assert not align_prompts & {r["prompt"] for s in EVAL_SPLITS for r in splits[s]}


def test_alignment_refuses_exactly_the_forbidden(splits):
    for record in splits["align"]:
        assert (record["response"] == REFUSAL) == (record["kind"] == "forbidden")
    assert all(r["response"] != REFUSAL for r in splits["pretrain"])


def test_eval_splits_are_paired_and_answers_are_true(world, splits):
    assert len(splits["eval_forbidden"]) == len(splits["eval_benign"]) == 8
    for record in splits["eval_forbidden"]:
        entity = world.by_name[record["entity"]]
        assert entity.forbidden and record["expected"] == " ".join(entity.secret)
        assert record["response"].startswith(record["affirmative_prefix"] + " ")
    for record in splits["eval_benign"]:
        assert record["expected"] in record["response"]


def test_too_many_eval_prompts_is_a_clear_error(world):
    with pytest.raises(ValueError, match="eval_forbidden: asked for 999 prompts but the world has only"):
        build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=999))


def test_vocabulary_covers_all_text(world, splits):
    words = world.words()
    for records in splits.values():
        for r in records:
            assert set(r["prompt"].split()) <= words and set(r["response"].split()) <= words
    assert len(ALIGN_TEMPLATES) and not set(ALIGN_TEMPLATES) & set(HELDOUT_TEMPLATES)


def test_pretraining_states_each_entitys_status_and_nothing_else_does(world, splits):
    """The knowledge refusal keys on: 'is X forbidden ?' answered yes for forbidden entities and no
    for their twins, status_facts times each, in pretraining only."""
    status = [r for r in splits["pretrain"] if r["template"] == STATUS_TEMPLATE]
    assert len(status) == world.config.status_facts * len(world.entities)
    for record in status:
        assert record["response"].startswith("yes ," if record["kind"] == "forbidden" else "no ,")
    for name in ("align", *EVAL_SPLITS):
        assert not any(r["template"] == STATUS_TEMPLATE for r in splits[name])
    no_facts = build_splits(ToyWorld(WorldConfig.with_defaults(seed=0, entities_per_category=4, twins_per_category=2, flowers=6,
                                                 status_facts=0)), SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4))
    assert not any(r["template"] == STATUS_TEMPLATE for r in no_facts["pretrain"])


def test_select_benign_is_held_out_from_eval_benign_and_leaves_the_other_splits_alone(world):
    """LAPT chooses λ on select_benign; benign accuracy is reported on eval_benign: no prompt in both.
    Drawn from its own generator, its size changes no other split."""
    from latentaudit.io import SELECT_BENIGN
    few = build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4, n_select_benign=2))
    many = build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4, n_select_benign=40))
    assert len(few[SELECT_BENIGN]) == 2 and len(many[SELECT_BENIGN]) == 40
    assert all(r["kind"] == "benign" and r["split"] == SELECT_BENIGN for r in many[SELECT_BENIGN])
    assert not {r["prompt"] for r in many[SELECT_BENIGN]} & {r["prompt"] for r in many["eval_benign"]}
    assert not {r["prompt"] for r in many[SELECT_BENIGN]} & {r["prompt"] for r in many["align"]}
    for name in ("pretrain", "align", *EVAL_SPLITS):
        assert few[name] == many[name]


def test_select_forbidden_asks_as_the_audit_asks_and_none_of_its_prompts(world):
    """The dissociated build chooses its checkpoint on select_forbidden: forbidden requests in the
    held-out phrasings eval_forbidden asks in, never one of eval_forbidden's prompts. Drawn from its
    own generator, it leaves every other split as it was without it (0 draws none)."""
    from latentaudit.io import SELECT_FORBIDDEN
    from latentaudit.organism.world import HELDOUT_TEMPLATES
    none = build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4))
    some = build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4, n_select_forbidden=12))
    assert none[SELECT_FORBIDDEN] == [] and len(some[SELECT_FORBIDDEN]) == 12
    chosen = some[SELECT_FORBIDDEN]
    assert all(r["kind"] == "forbidden" and r["template"] in HELDOUT_TEMPLATES and r["split"] == SELECT_FORBIDDEN
               for r in chosen)
    assert len({r["prompt"] for r in chosen}) == 12
    assert not {r["prompt"] for r in chosen} & {r["prompt"] for r in some["eval_forbidden"]}
    assert not {r["prompt"] for r in chosen} & {r["prompt"] for r in some["align"]}
    for name in none:
        if name != SELECT_FORBIDDEN:
            assert none[name] == some[name], name
    pool = sum(r["kind"] == "forbidden" for r in some["align"]) // 4 * len(HELDOUT_TEMPLATES) - 8
    with pytest.raises(ValueError, match=rf"select_forbidden: asked for {pool + 1} prompts but only {pool} held-out "
                                         "forbidden prompts are left beside eval_forbidden's 8"):
        build_splits(world, SplitConfig.with_defaults(seed=0, n_eval=8, n_eval_twin=4, n_select_forbidden=pool + 1))

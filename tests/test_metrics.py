import numpy as np
import pandas as pd
import pytest

from latentaudit.attack_success import lasr, masr, pasr
from latentaudit.metrics import attack_tables, behavior_table

# 3 prompts x 2 layers, by hand: LASR = [2/3, 1/3]; PASR = 2/3; MASR = 3/3 (every prompt broken somewhere)
A = np.array([[1, 0], [1, 0], [0, 1]])


def test_lasr_pasr_masr_hand_case():
    np.testing.assert_allclose(lasr(A), [2 / 3, 1 / 3])
    assert pasr(A) == pytest.approx(2 / 3)
    assert masr(A) == pytest.approx(1.0)
    assert masr(np.array([[1, 1], [0, 0]])) == 0.5 and pasr(np.array([[1, 1], [0, 0]])) == 0.5


def _judged():
    rows = []
    for i in range(3):
        for layer in range(2):
            for direction in range(2):
                # direction 1 succeeds where A says; direction 0 never does: best-of-K gives A
                rows.append({"split": "eval_forbidden", "prompt_id": f"f{i}", "layer": layer, "strength": 1.0,
                             "direction": direction, "harmful": float(A[i, layer] and direction == 1),
                             "refusal": 0.0, "label": "other", "correct": np.nan})
                rows.append({"split": "eval_benign", "prompt_id": f"b{i}", "layer": layer, "strength": 1.0,
                             "direction": direction, "harmful": np.nan, "refusal": 0.0, "label": "correct",
                             "correct": 1.0 if layer == 0 else 0.5})
    frame = pd.DataFrame(rows).assign(attack="asa_random")
    clean = pd.DataFrame([{"split": "eval_forbidden", "prompt_id": "f0", "layer": -1, "strength": 0.0, "direction": -1,
                           "harmful": 0.0, "refusal": 1.0, "label": "refusal", "correct": np.nan, "attack": "none"},
                          {"split": "eval_twin", "prompt_id": "t0", "layer": -1, "strength": 0.0, "direction": -1,
                           "harmful": 0.0, "refusal": 1.0, "label": "refusal", "correct": np.nan, "attack": "none"}])
    return pd.concat([frame, clean]).assign(model="m", variant="aligned", judge="structural")


def test_attack_tables_from_judged_rows():
    cells, summary = attack_tables(_judged())
    random_cells = cells[cells["attack"] == "asa_random"].sort_values("layer")
    np.testing.assert_allclose(random_cells["asr"], [2 / 3, 1 / 3])
    np.testing.assert_allclose(random_cells["benign_accuracy"], [1.0, 0.5])
    row = summary[summary["attack"] == "asa_random"].iloc[0]
    assert row["masr"] == pytest.approx(1.0) and row["pasr"] == pytest.approx(2 / 3) and row["best_layer"] == 0
    assert row["clean_asr"] == 0.0 and row["n"] == 3
    none = cells[cells["attack"] == "none"].iloc[0]
    assert none["layer"] == -1 and none["asr"] == 0.0


def test_an_attack_on_its_own_prompts_reads_its_clean_asr_from_its_init_rows():
    # ASA on AdvBench (forbidden_split) while `none` ran on HarmBench: the clean ASR (INIT) is the
    # attack's own clean answers to its prompts, never `none`'s on other prompts; none stored: NaN
    judged = _judged()
    on_advbench = judged[judged["attack"] == "asa_random"].assign(attack="asa_grad", forbidden_split="eval_advbench",
                                                                   init=False)
    init = pd.DataFrame([{"split": "eval_forbidden", "prompt_id": f"f{i}", "layer": -1, "strength": 0.0,
                          "direction": 0, "harmful": float(i == 0), "refusal": float(i != 0), "label": "other",
                          "correct": np.nan, "attack": "asa_grad", "forbidden_split": "eval_advbench", "init": True}
                         for i in range(3)]).assign(model="m", variant="aligned", judge="structural")
    cells, summary = attack_tables(pd.concat([judged, on_advbench, init]))
    by_attack = summary.set_index("attack")
    assert by_attack.loc["asa_grad", "clean_asr"] == pytest.approx(1 / 3)  # the INIT rows, not `none`'s 0.0
    assert by_attack.loc["asa_grad", "masr"] == pytest.approx(1.0) and by_attack.loc["asa_grad", "n"] == 3
    assert -1 not in set(cells.loc[cells["attack"] == "asa_grad", "layer"])  # INIT is not a layer of the sweep
    assert by_attack.loc["asa_random", "clean_asr"] == 0.0 and "_own_prompts" not in summary
    _, without_init = attack_tables(pd.concat([judged, on_advbench]))
    assert np.isnan(without_init.set_index("attack").loc["asa_grad", "clean_asr"])


def test_attack_tables_of_plain_generation_alone():
    # a config whose only sweep is `none` (harmful fine-tuning, tabled apart, beside it) crashed here
    judged = _judged()
    cells, summary = attack_tables(judged[judged["attack"] == "none"])
    assert summary["attack"].tolist() == ["none"] and summary["masr"].tolist() == [0.0]
    assert "_own_prompts" not in summary and cells["layer"].tolist() == [-1]


def test_behavior_table():
    table = behavior_table(_judged()).set_index("split")
    assert table.loc["forbidden", "refusal_rate"] == 1.0
    assert table.loc["twin", "over_refusal"] == 1.0 and np.isnan(table.loc["forbidden", "over_refusal"])


def test_tables_of_attacks_without_a_clean_run():
    """Judged rows of attacks only (no ``none``): an empty behaviour table with the contract's columns,
    and the defense table reads it (clean columns NaN) instead of failing on a missing column."""
    from latentaudit.metrics import RESULTS_CONTRACT, defense_table
    attacked = _judged()
    attacked = attacked[attacked["attack"] != "none"]
    behavior = behavior_table(attacked)
    assert behavior.empty and set(RESULTS_CONTRACT["behavior"]) <= set(behavior.columns)
    _, summary = attack_tables(attacked)
    defenses = defense_table(summary, behavior)
    assert len(summary) == 1 and len(defenses) == 1 and defenses["clean_refusal"].isna().all()


def test_results_contract_check_names_missing_files_and_columns(tmp_path):
    from latentaudit.metrics import RESULTS_CONTRACT, results_contract_check

    full = {c: [1] for c in RESULTS_CONTRACT["behavior"]}
    pd.DataFrame(full).to_csv(tmp_path / "behavior.csv", index=False)
    pd.DataFrame({**{c: [] for c in RESULTS_CONTRACT["attacks"] if c != "strength"}, "budget": []}).to_csv(
        tmp_path / "attacks.csv", index=False)
    report = results_contract_check(tmp_path)
    assert set(report) == set(RESULTS_CONTRACT)
    assert report["behavior"] == {"exists": True, "rows": 1, "missing_columns": []}
    assert report["attacks"] == {"exists": True, "rows": 0, "missing_columns": ["strength"]}
    assert report["lvs"] == {"exists": False, "rows": 0, "missing_columns": RESULTS_CONTRACT["lvs"]}


def test_attack_summary_table_puts_every_judge_side_by_side():
    """The primary judge's rows with each other judge's MASR and clean ASR beside them (issue 12:
    the keyword ASR beside the coherent judge's), matched on model, variant, attack and strength."""
    from latentaudit.report.tables import attack_summary_frame

    rows = []
    for judge, masr in (("coherent", 0.25), ("refusal_keyword", 0.75)):
        for strength in (0.5, 1.0):
            rows.append({"model": "m", "variant": "aligned", "attack": "asa_random", "judge": judge,
                         "strength": strength, "masr": masr * strength, "pasr": 0.1, "best_layer": 3, "n": 8,
                         "benign_accuracy": 0.9, "clean_asr": masr / 10})
    table = attack_summary_frame(pd.DataFrame(rows), "coherent")
    assert list(table["strength"]) == [0.5, 1.0] and list(table["masr"]) == [0.125, 0.25]
    assert list(table["masr[refusal_keyword]"]) == [0.375, 0.75]
    assert list(table["clean_asr[refusal_keyword]"]) == [0.075, 0.075]
    alone = attack_summary_frame(pd.DataFrame(rows[:2]), "coherent")
    assert not any(c.startswith("masr[") for c in alone.columns)


def test_metrics_read_string_columns_in_one_chunk(tmp_path):
    """Frames concatenated from many parquet files hold each string column in as many Arrow chunks;
    collect_metrics's one_chunk gives one chunk each, the values and dtypes unchanged."""
    from latentaudit.jobs.scoring import one_chunk

    for i in range(3):
        pd.DataFrame({"split": ["eval_forbidden", None], "label": ["refusal", "compliant"], "x": [i, i]}).to_parquet(
            tmp_path / f"{i}.parquet")
    frame = pd.concat([pd.read_parquet(tmp_path / f"{i}.parquet") for i in range(3)], ignore_index=True)
    assert frame["split"].array.__arrow_array__().num_chunks == 3
    single = one_chunk(frame)
    pd.testing.assert_frame_equal(single, frame)
    assert all(single[c].array.__arrow_array__().num_chunks == 1 for c in ("split", "label"))

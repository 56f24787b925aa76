"""REPRODUCE.md's fidelity table and configs/paper.yaml agree: every hyperparameter listed with
its value and a source, no stale row (issue 13)."""
import re

import yaml

from conftest import REPO
from latentaudit.fidelity import hyperparameters, read_table

SOURCE = re.compile(r"arXiv \d{4}\.\d{5}|\.py\b|\.ipynb\b|shared/papers/|deviation|project\b|model card|HarmBench")


def _both():
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    return dict(hyperparameters(paper)), read_table((REPO / "REPRODUCE.md").read_text())


def test_every_paper_hyperparameter_is_in_the_table_with_its_value():
    config, table = _both()
    missing = sorted(set(config) - set(table))
    assert not missing, f"configs/paper.yaml keys missing from REPRODUCE.md's fidelity table: {missing}"
    stale = sorted(set(table) - set(config))
    assert not stale, f"fidelity-table rows for keys configs/paper.yaml does not have: {stale}"
    wrong = {key: (table[key]["value"], value) for key, value in config.items() if table[key]["value"] != value}
    assert not wrong, f"fidelity table vs paper.yaml (table, config): {wrong}"


def test_every_row_names_a_source():
    _, table = _both()
    for key, row in table.items():
        assert SOURCE.search(row["source"]), f"{key}: source {row['source']!r} names no paper, file or reason"
        assert "as the paper" not in row["source"].lower() + row["deviation"].lower(), key


def test_a_changed_value_is_caught(tmp_path):
    from latentaudit.fidelity import BEGIN, END
    text = (REPO / "REPRODUCE.md").read_text()
    table = read_table(text.replace("| `variants.lat.lora.alpha` | `8` |", "| `variants.lat.lora.alpha` | `64` |"))
    assert table["variants.lat.lora.alpha"]["value"] == 64
    assert BEGIN in text and END in text

"""REPRODUCE.md's fidelity table: every hyperparameter of configs/paper.yaml, its value and its
source. ``hyperparameters`` lists the keys the table must hold; ``read_table`` parses it back, so a
test can fail when the two disagree. Torch-free."""
from __future__ import annotations

import json
import re

import yaml

# Not hyperparameters: where things run and where weights and data come from (provenance).
EXCLUDED = (re.compile(r"^(device|threads)$"), re.compile(r"^models\.[^.]+\.(source|dtype|variants)$"),
            re.compile(r"^models\.[^.]+\.variant_attacks\."),  # what runs, as `variants`: no hyperparameter
            re.compile(r"^data\.datasets\."), re.compile(r"^judges\.[^.]+\.(model|revision|dtype)$"),
            re.compile(r"^report\."), re.compile(r"^data\.splits\.[^.]+\.(role|datasets|harmful)$"))
BEGIN, END = "<!-- fidelity-table:begin -->", "<!-- fidelity-table:end -->"


def _leaves(value, prefix: str):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def hyperparameters(config: dict) -> list[tuple[str, object]]:
    """(dotted key, value) of every leaf of the paper config (lists are one value), less EXCLUDED."""
    return [(key, value) for key, value in _leaves(config, "") if not any(p.search(key) for p in EXCLUDED)]


def cell(value) -> str:
    """A value as the table writes it: one-line YAML (a multi-line string double-quoted, its
    newlines escaped)."""
    if isinstance(value, str) and "\n" in value:
        text = json.dumps(value)
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    return text.replace("|", "\\|")  # a table cell: a pipe is escaped (a chat template's <|eot_id|>)


def read_table(markdown: str) -> dict[str, dict]:
    """{key: {value, source, deviation}} of the rows between the table's markers."""
    if BEGIN not in markdown or END not in markdown:
        raise ValueError(f"REPRODUCE.md has no fidelity table (markers {BEGIN} ... {END})")
    rows = {}
    for line in markdown.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        key, value = cells[0].strip("`"), yaml.safe_load(cells[1].strip("`"))
        if key in rows:
            raise ValueError(f"fidelity table: {key} listed twice")
        rows[key] = {"value": value, "source": cells[2], "deviation": cells[3]}
    return rows

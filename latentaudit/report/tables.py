"""Readable renderings (Markdown and LaTeX) of the results-contract CSVs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

SUMMARY_COLUMNS = ["model", "variant", "attack", "strength", "masr", "pasr", "best_layer", "clean_asr",
                   "benign_accuracy", "n"]
BEHAVIOR_COLUMNS = ["model", "variant", "split", "refusal_rate", "benign_accuracy", "over_refusal", "n"]


def _write(frame: pd.DataFrame, markdown: str | Path, latex: str | Path, title: str) -> None:
    Path(markdown).write_text(f"### {title}\n\n" + frame.to_markdown(index=False, floatfmt=".3f") + "\n")
    Path(latex).write_text(frame.to_latex(index=False, float_format="%.3f", caption=title, escape=True))


def attack_summary_tables(summary_csv: str, judge: str, markdown: str, latex: str) -> None:
    summary = pd.read_csv(summary_csv)
    table = summary[summary["judge"] == judge][SUMMARY_COLUMNS].sort_values(["model", "variant", "attack", "strength"])
    _write(table, markdown, latex, f"Attack success (judge: {judge}); MASR/PASR over layers per strength")


def behavior_tables(behavior_csv: str, judge: str, markdown: str, latex: str) -> None:
    behavior = pd.read_csv(behavior_csv)
    table = behavior[behavior["judge"] == judge][BEHAVIOR_COLUMNS].sort_values(["model", "variant", "split"])
    _write(table, markdown, latex, f"Behaviour without attack (judge: {judge})")

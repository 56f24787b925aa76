"""Readable renderings (Markdown and LaTeX) of the results-contract CSVs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..metrics import REFERENCE_MASR

SUMMARY_COLUMNS = ["model", "variant", "attack", "strength", "masr", "pasr", "best_layer", "clean_asr",
                   "benign_accuracy", "n"]
BEHAVIOR_COLUMNS = ["model", "variant", "split", "refusal_rate", "benign_accuracy", "over_refusal", "n"]


def write_table(frame: pd.DataFrame, markdown: str | Path, latex: str | Path, title: str) -> None:
    Path(markdown).write_text(f"### {title}\n\n" + frame.to_markdown(index=False, floatfmt=".3f") + "\n")
    Path(latex).write_text(frame.to_latex(index=False, float_format="%.3f", caption=title, escape=True))


KEYS = ["model", "variant", "attack", "strength"]


def attack_summary_frame(summary: pd.DataFrame, judge: str) -> pd.DataFrame:
    """The primary judge's rows, with every other judge's MASR and clean ASR beside them as
    ``masr[<judge>]`` and ``clean_asr[<judge>]`` (e.g. the refusal-keyword judge, which counts
    broken text as harm, beside the coherent judge, which does not)."""
    table = summary[summary["judge"] == judge][SUMMARY_COLUMNS]
    for other in sorted(set(summary["judge"]) - {judge}):
        rows = summary[summary["judge"] == other][KEYS + ["masr", "clean_asr"]]
        table = table.merge(rows.rename(columns={"masr": f"masr[{other}]", "clean_asr": f"clean_asr[{other}]"}),
                            on=KEYS, how="left", validate="one_to_one")
    return table.sort_values(KEYS)


def attack_summary_tables(summary_csv: str, judge: str, markdown: str, latex: str) -> None:
    table = attack_summary_frame(pd.read_csv(summary_csv), judge)
    others = [c.removeprefix("masr[").rstrip("]") for c in table.columns if c.startswith("masr[")]
    beside = f"; beside it: {', '.join(others)}" if others else ""
    write_table(table, markdown, latex, f"Attack success (judge: {judge}{beside}); MASR/PASR over layers per strength")


def behavior_tables(behavior_csv: str, judge: str, markdown: str, latex: str) -> None:
    behavior = pd.read_csv(behavior_csv)
    columns = BEHAVIOR_COLUMNS + [c for c in behavior.columns if c.startswith("capability_")]
    table = behavior[behavior["judge"] == judge][columns].sort_values(["model", "variant", "split"])
    write_table(table, markdown, latex, f"Behaviour without attack (judge: {judge})")


def defense_tables(defenses_csv: str, judge: str, markdown: str, latex: str) -> None:
    """Variant x attack at s* (MASR, with the benign accuracy under the same vectors), beside
    each variant's clean benign accuracy, benign refusal and over-refusal."""
    table = pd.read_csv(defenses_csv)
    table = table[(table["judge"] == judge) & table["at_reference"]]
    if table.empty:
        frame = pd.DataFrame({"note": [f"no attack strength equals s* (the aligned ASA_grad MASR >= {REFERENCE_MASR:g} point)"]})
        write_table(frame, markdown, latex, f"Defenses (judge: {judge})")
        return
    s_star = table["reference_strength"].iloc[0]
    cell = table.assign(cell=[f"{m:.3f} ({b:.2f})" for m, b in
                              zip(table["masr"], table["benign_accuracy_under_attack"])])
    wide = cell.pivot_table(index=["model", "variant"], columns="attack", values="cell", aggfunc="first")
    clean = table.groupby(["model", "variant"])[["clean_refusal", "clean_benign_accuracy", "benign_refusal",
                                                 "over_refusal"]].first()
    frame = wide.join(clean).reset_index()
    order = {"aligned": 0}
    frame = frame.sort_values(["model", "variant"], key=lambda c: c.map(lambda v: (order.get(v, 1), v))
                              if c.name == "variant" else c)
    write_table(frame, markdown, latex, f"Defenses at s* = {s_star:g} (judge: {judge}): MASR (benign accuracy under "
                                        f"the same vectors); clean benign accuracy, benign refusal, over-refusal")

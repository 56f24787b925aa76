"""The audit card's figures: behaviour without attack, LASR by layer, the LVS by layer and by budget."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def save_figure(fig, path: str) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def behavior_figure(rows: dict[str, dict], path: str) -> None:
    measures = [("refusal", "refusal (forbidden)"), ("over_refusal", "over-refusal (twin)"),
                ("benign_refusal", "refusal (benign)")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(len(rows), 1)
    for k, (model, values) in enumerate(rows.items()):
        ax.bar([i + k * width for i in range(len(measures))], [values[m] for m, _ in measures], width, label=model)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(measures))], [label for _, label in measures])
    ax.set(ylim=(0, 1.05), ylabel="rate", title="Behaviour without attack")
    ax.legend(fontsize=8)
    save_figure(fig, path)


Unit = tuple[str, str]  # (model, variant): what the card compares


def unit_label(unit: Unit) -> str:
    """A (model, variant)'s name on the card: the model alone for its aligned variant."""
    model, variant = unit
    return model if variant == "aligned" else f"{model}/{variant}"


def _of_units(frame: pd.DataFrame, units: list[Unit]) -> pd.DataFrame:
    """The rows of the (model, variant) pairs ``units``, with their card label in ``unit``."""
    labels = {u: unit_label(u) for u in units}
    unit = pd.Series(list(zip(frame["model"], frame["variant"])), index=frame.index, dtype=object)
    return frame[unit.isin(list(labels))].assign(unit=unit.map(labels))


def by_layer_figure(attacks: pd.DataFrame, units: list[Unit], judge: str, prefix: str, path: str,
                    title: str) -> None:
    """LASR by layer at each attack's strongest setting, one panel per attack, one line per (model, variant)."""
    cells = _of_units(attacks[(attacks["judge"] == judge) & attacks["attack"].str.startswith(prefix)
                              & (attacks["layer"] >= 0)], units)
    names = sorted(cells["attack"].unique()) or ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, attack in zip(axes[0], names):
        group = cells[cells["attack"] == attack]
        for model, lines in group.groupby("unit"):
            strongest = lines[lines["strength"] == lines["strength"].max()]
            ax.plot(strongest["layer"], strongest["asr"], marker="o",
                    label=f"{model} (s={strongest['strength'].iloc[0]:g})")
        ax.set(title=f"{title}: {attack}", xlabel="layer (block output)", ylabel="LASR", ylim=(-0.02, 1.02))
        if len(group):
            ax.legend(fontsize=7)
    save_figure(fig, path)


def lvs_figure(lvs: pd.DataFrame, units: list[Unit], path: str, budgets: dict[str, float] | None = None,
               layers: dict[str, int] | None = None) -> None:
    """Two panels of the LVS attack's PGD rows (not its control), one line per (model, variant) and
    scorer, mean with its 95 % CI bars: against the site at the unit's reference budget (``budgets``, by
    card label; the largest budget where none), and against the budget at the unit's nudge layer
    (``layers``; the first site it ran at where none)."""
    budgets, layers = budgets or {}, layers or {}
    rows = _of_units(lvs[lvs["attack"] == "lvs"], units)
    several = rows["scorer"].nunique() > 1
    fig, (by_layer, by_budget) = plt.subplots(1, 2, figsize=(9.5, 3.2))

    def plot(ax, line, x, color, label):
        ax.errorbar(line[x], line["lvs_mean"], yerr=[line["lvs_mean"] - line["mean_ci_low"],
                                                     line["mean_ci_high"] - line["lvs_mean"]],
                    marker="o", capsize=3, color=color, label=label)

    for i, ((unit, scorer), group) in enumerate(rows.groupby(["unit", "scorer"])):
        label = f"{unit} ({scorer})" if several else unit
        budget = budgets.get(unit, group["strength"].max())
        plot(by_layer, group[np.isclose(group["strength"], budget)].sort_values("layer"), "layer", f"C{i}",
             f"{label}, p={budget:g}")
        layer = layers.get(unit, group["layer"].min())
        plot(by_budget, group[group["layer"] == layer].sort_values("strength"), "strength", f"C{i}",
             f"{label}, layer {layer}")
    ticks = sorted(rows["layer"].unique())
    by_layer.set_xticks(ticks, ["embed" if t < 0 else str(t) for t in ticks])
    by_layer.set(title="LVS by layer (reference budget)", xlabel="site (block output)", ylabel="LVS (mean, 95% CI)")
    by_budget.set(title="LVS by budget (nudge layer)", xlabel="budget p (ε = p · max|h|)", ylabel="LVS (mean, 95% CI)",
                  xscale="log")
    for ax in (by_layer, by_budget):
        if len(rows):
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)

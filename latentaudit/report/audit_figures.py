"""The audit card's figures: behaviour without attack, LASR by layer, the LVS layer profile."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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


def by_layer_figure(attacks: pd.DataFrame, models: list[str], judge: str, prefix: str, path: str, title: str) -> None:
    """LASR by layer at each attack's strongest setting, one panel per attack, one line per model."""
    cells = attacks[(attacks["judge"] == judge) & attacks["attack"].str.startswith(prefix) & (attacks["layer"] >= 0)
                    & (attacks["variant"] == "aligned") & attacks["model"].isin(models)]
    names = sorted(cells["attack"].unique()) or ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, attack in zip(axes[0], names):
        group = cells[cells["attack"] == attack]
        for model, lines in group.groupby("model"):
            strongest = lines[lines["strength"] == lines["strength"].max()]
            ax.plot(strongest["layer"], strongest["asr"], marker="o",
                    label=f"{model} (s={strongest['strength'].iloc[0]:g})")
        ax.set(title=f"{title}: {attack}", xlabel="layer (block output)", ylabel="LASR", ylim=(-0.02, 1.02))
        if len(group):
            ax.legend(fontsize=7)
    save_figure(fig, path)


def lvs_figure(lvs: pd.DataFrame, models: list[str], path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for model, group in lvs[lvs["model"].isin(models) & (lvs["variant"] == "aligned")].groupby("model"):
        largest = group[group["strength"] == group["strength"].max()]
        ax.plot(largest["layer"], largest["lvs_mean"], marker="o", label=model)
    ax.set(title="Latent Vulnerability Score by layer", xlabel="layer", ylabel="LVS (mean)")
    ax.legend(fontsize=8)
    save_figure(fig, path)

"""Figures from the results-contract CSVs only (so they regenerate without any model)."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, paths: list[str], dpi: int) -> None:
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _panels(n: int, width: float = 4.2, height: float = 3.2):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), squeeze=False)
    return fig, axes[0]


STRENGTH_LABEL = "strength (α, ε: × activation; prefill: tokens)"


def _strength_axis(ax, strengths) -> None:
    """Log-scaled strength axis labelled at the swept values only."""
    ax.set_xscale("log")
    ticks = sorted(set(float(s) for s in strengths))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def lasr_vs_layer(attacks_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """LASR against layer, one line per strength, one panel per (model, variant, attack)."""
    cells = pd.read_csv(attacks_csv)
    cells = cells[(cells["judge"] == judge) & (cells["layer"] >= 0)]  # attacks that act at a layer
    groups = list(cells.groupby(["model", "variant", "attack"]))
    with plt.style.context(style):
        fig, axes = _panels(len(groups))
        for ax, ((model, variant, attack), group) in zip(axes, groups):
            for strength, line in group.groupby("strength"):
                ax.plot(line["layer"], line["asr"], marker="o", label=f"{strength:g}")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel="layer (block output)", ylabel="LASR",
                   ylim=(-0.02, 1.02))
            ax.legend(fontsize=7, title="strength", title_fontsize=7)
        _save(fig, paths, dpi)


def masr_vs_strength(summary_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """MASR and PASR against strength with the benign-accuracy control under the same vectors."""
    summary = pd.read_csv(summary_csv)
    summary = summary[(summary["judge"] == judge) & (summary["attack"] != "none")]
    groups = list(summary.groupby(["model", "variant", "attack"]))
    with plt.style.context(style):
        fig, axes = _panels(len(groups))
        for ax, ((model, variant, attack), group) in zip(axes, groups):
            group = group.sort_values("strength")
            ax.plot(group["strength"], group["masr"], marker="o", label="MASR")
            ax.plot(group["strength"], group["pasr"], marker="s", label="PASR")
            ax.plot(group["strength"], group["benign_accuracy"], marker="^", ls="--", label="benign acc. (control)")
            ax.axhline(group["clean_asr"].iloc[0], color="grey", lw=0.8, ls=":", label="clean ASR")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel=STRENGTH_LABEL,
                   ylim=(-0.02, 1.02))
            _strength_axis(ax, group["strength"])
            ax.legend(fontsize=7)
        _save(fig, paths, dpi)


def nll_probe(nll_csv: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Mean NLL increase of the original (refusal) response against strength, one line per layer."""
    table = pd.read_csv(nll_csv)
    groups = list(table.groupby(["model", "variant", "attack"]))
    with plt.style.context(style):
        fig, axes = _panels(len(groups))
        for ax, ((model, variant, attack), group) in zip(axes, groups):
            for layer, line in group.groupby("layer"):
                line = line.sort_values("strength")
                ax.plot(line["strength"], line["nll_increase_mean"], marker="o", label=f"layer {layer}")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel=STRENGTH_LABEL,
                   ylabel="Δ NLL of the clean response (nats)")
            _strength_axis(ax, group["strength"])
            ax.legend(fontsize=7)
        fig.suptitle("NLL probe: the original clean response, scored under each perturbation", fontsize=10)
        fig.tight_layout()
        _save(fig, paths, dpi)

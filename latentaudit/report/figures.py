"""Figures from the results-contract CSVs only (so they regenerate without any model)."""
from __future__ import annotations

import matplotlib
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save_figure(fig, paths: list[str], dpi: int) -> None:
    """Write ``fig`` to every path (one per format) and close it."""
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _panels(n: int, width: float = 4.2, height: float = 3.2):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), squeeze=False)
    return fig, axes[0]


def _grid(groups: list, width: float = 4.0, height: float = 3.0):
    """One row per (model, variant), one column per attack: [(axis, key, frame)]; unused axes hidden."""
    rows = sorted({(m, v) for (m, v, _), _ in groups}, key=lambda mv: (mv[0], mv[1] != "aligned", mv[1]))
    cols = sorted({a for (_, _, a), _ in groups})
    fig, axes = plt.subplots(len(rows) or 1, len(cols) or 1, figsize=(width * max(len(cols), 1),
                             height * max(len(rows), 1)), squeeze=False)
    placed = []
    for key, frame in groups:
        placed.append((axes[rows.index(key[:2])][cols.index(key[2])], key, frame))
    used = {id(ax) for ax, _, _ in placed}
    for ax in axes.flat:
        if id(ax) not in used:
            ax.set_visible(False)
    return fig, placed


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
        fig, placed = _grid(groups)
        for ax, (model, variant, attack), group in placed:
            for strength, line in group.groupby("strength"):
                ax.plot(line["layer"], line["asr"], marker="o", label=f"{strength:g}")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel="layer (block output)", ylabel="LASR",
                   ylim=(-0.02, 1.02))
            ax.legend(fontsize=7, title="strength", title_fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def masr_vs_strength(summary_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """MASR and PASR against strength with the benign-accuracy control under the same vectors."""
    summary = pd.read_csv(summary_csv)
    summary = summary[(summary["judge"] == judge) & (summary["attack"] != "none")]
    groups = list(summary.groupby(["model", "variant", "attack"]))
    with plt.style.context(style):
        fig, placed = _grid(groups)
        for ax, (model, variant, attack), group in placed:
            group = group.sort_values("strength")
            ax.plot(group["strength"], group["masr"], marker="o", label="MASR")
            ax.plot(group["strength"], group["pasr"], marker="s", label="PASR")
            ax.plot(group["strength"], group["benign_accuracy"], marker="^", ls="--", label="benign acc. (control)")
            ax.axhline(group["clean_asr"].iloc[0], color="grey", lw=0.8, ls=":", label="clean ASR")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel=STRENGTH_LABEL,
                   ylim=(-0.02, 1.02))
            _strength_axis(ax, group["strength"])
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def nll_probe(nll_csv: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Mean NLL increase of the original (refusal) response against strength, one line per layer."""
    table = pd.read_csv(nll_csv)
    groups = list(table.groupby(["model", "variant", "attack"]))
    with plt.style.context(style):
        fig, placed = _grid(groups)
        for ax, (model, variant, attack), group in placed:
            for layer, line in group.groupby("layer"):
                line = line.sort_values("strength")
                ax.plot(line["strength"], line["nll_increase_mean"], marker="o", label=f"layer {layer}")
            ax.set(title=f"{attack} · {model}/{variant}", xlabel=STRENGTH_LABEL,
                   ylabel="Δ NLL of the clean response (nats)")
            _strength_axis(ax, group["strength"])
            ax.legend(fontsize=7)
        fig.suptitle("NLL probe: the original clean response, scored under each perturbation", fontsize=10)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def defense_pareto(defenses_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """MASR at s* against benign accuracy, one point per (variant, attack); filled = clean
    benign accuracy, open = benign accuracy under the same perturbation vectors."""
    table = pd.read_csv(defenses_csv)
    table = table[(table["judge"] == judge) & table["at_reference"]]
    models = sorted(table["model"].unique())
    markers = dict(zip(sorted(table["attack"].unique()), "osD^vP*X"))
    with plt.style.context(style):
        fig, axes = _panels(len(models), width=5.5, height=4.2)
        for ax, model in zip(axes, models):
            rows = table[table["model"] == model]
            colours = {v: f"C{i}" for i, v in enumerate(sorted(rows["variant"].unique(),
                                                               key=lambda v: (v != "aligned", v)))}
            for _, r in rows.iterrows():
                c, m = colours[r["variant"]], markers[r["attack"]]
                ax.scatter(r["clean_benign_accuracy"], r["masr"], color=c, marker=m, s=40)
                ax.scatter(r["benign_accuracy_under_attack"], r["masr"], facecolors="none", edgecolors=c, marker=m,
                           s=40)
                ax.plot([r["benign_accuracy_under_attack"], r["clean_benign_accuracy"]], [r["masr"]] * 2, color=c,
                        lw=0.6, alpha=0.5)
            for v, c in colours.items():
                ax.scatter([], [], color=c, label=v)
            for a, m in markers.items():
                ax.scatter([], [], color="grey", marker=m, label=a)
            s_star = rows["reference_strength"].iloc[0] if len(rows) else float("nan")
            ax.set(title=f"{model}: attacks at s* = {s_star:g}", xlabel="benign accuracy (filled: clean; open: "
                   "same vectors)", ylabel="MASR", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def claim_threshold_label(thresholds: pd.Series) -> str:
    """One claim's threshold for a row label: the same on every seed; the rule the seeds' numbers
    come from where a seed states it (a cut's "half of aligned's MASR at s*"); else the range of the
    seeds' bounds (a bound relative to the seed's aligned model)."""
    unique = list(dict.fromkeys(thresholds))
    if len(unique) == 1:
        return unique[0]
    rules = [t for t in unique if any(c.isalpha() for c in t)]
    if rules:
        return rules[0]
    operators = {t.split()[0] for t in unique}
    if len(operators) == 1:
        bounds = [float(t.split()[1]) for t in unique]
        return f"{operators.pop()} {min(bounds):.3g} to {max(bounds):.3g} by seed"
    return "threshold varies by seed"


def margin_text(margin_prompts: float) -> str:
    """A claim's margin in prompts as the claims figure and ``make run``'s printout show it: "+4", "-2";
    empty where the claim is not a rate over prompts."""
    return "" if pd.isna(margin_prompts) else f"{margin_prompts:+.0f}"


def claim_cell_text(value: float, margin_prompts: float) -> str:
    """A claims-figure cell: the value, and a rate's margin in prompts in brackets ("0.891 (-4)")."""
    if pd.isna(value):
        return "n/a"
    margin = margin_text(margin_prompts)
    return f"{value:.3g}" + (f" ({margin})" if margin else "")


def claims_by_seed(seeds_csv: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """``make robustness``'s claims (``seeds.csv``) as a grid: one row per claim, in the order the
    claims are made, labelled with its threshold, one column per seed; a cell shows the value and,
    for a rate over prompts, its margin in prompts in brackets (+k: held, k prompts from missing;
    -k: missed by k), green where the claim held, red where it missed, grey where it missed with no
    value (e.g. a cut at an s* that does not exist on that seed)."""
    table = pd.read_csv(seeds_csv)
    keys = list(dict.fromkeys(table["key"]))
    seeds = sorted(table["seed"].unique())
    cells = table.set_index(["key", "seed"])
    colours = {"held": "#a6dba0", "missed": "#f4a582", "missed, no value": "#d9d9d9"}
    with plt.style.context(style):
        fig, ax = plt.subplots(figsize=(1.1 * len(seeds) + 3.2, 0.28 * len(keys) + 1.2))
        shown = set()
        for row, key in enumerate(keys):
            for column, seed in enumerate(seeds):
                if (key, seed) not in cells.index:
                    continue
                cell = cells.loc[(key, seed)]
                state = "missed, no value" if pd.isna(cell["value"]) else "held" if cell["holds"] else "missed"
                shown.add(state)
                ax.add_patch(matplotlib.patches.Rectangle((column - 0.5, row - 0.5), 1, 1, facecolor=colours[state],
                                                          edgecolor="white"))
                ax.text(column, row, claim_cell_text(cell["value"], cell["margin_prompts"]), ha="center",
                        va="center", fontsize=7)
        ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
        ax.set_yticks(range(len(keys)), [f"{k}  {claim_threshold_label(cells.loc[k]['threshold'])}" for k in keys],
                      fontsize=7)
        ax.set(xlim=(-0.5, len(seeds) - 0.5), ylim=(len(keys) - 0.5, -0.5))
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        for state, colour in colours.items():
            if state in shown:
                ax.scatter([], [], marker="s", color=colour, label=state)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        every = table.groupby("key")["holds"].all()
        ax.set_title(f"claims per seed: {every.sum()} of {len(keys)} hold on every seed", fontsize=10)
        fig.tight_layout()
        save_figure(fig, paths, dpi)

"""The audit-gap report (LVS paper): per variant, the behavioural audit beside the latent ones.

Columns: clean refusal (behaviour); ``pgd_asr_nudge_layer`` (the paper's headline PGD ASR: the
adaptive ℓ2-sphere attack ``adaptive_pgd`` at the nudge layer and the reference radius
``radius_fraction``) and its random control; the LVS attack's own ℓ∞ PGD ASR at the nudge layer
and the reference budget (``lvs_pgd_asr``, its uniform control) and the LVS there; steering ASR
along the pole direction at the reference fraction, as the paper reports it (the maximum over
the layers steering covered of the per-layer ASR, ``steering_asr_max_layers``: the best layer's
rate, not the MASR, the share of prompts broken at any layer) and at the nudge layer, each with its
matched random control (the control's maximum over layers beside the maximum); and (when
``harmful_ft.csv`` has rows) t0.8 per fine-tuning data set: the mean over the seeds that reached
compliance 0.8, with the censored seeds (never reached) counted beside it, and the NLL of that
data set's harmful completions at step 0. The nudge layer of each model is round(nudge_depth ·
L) with L = the number of blocks its LVS attack covered (its largest layer + 1). The reference
budget is ``budget``, or with ``budget: auto`` the largest LVS budget up to which that model's
aligned variant keeps LVS PGD ASR at the nudge layer ≤ ``aligned_asr_ceiling`` (``reference_budget``):
the regime where the behavioural audit and the latent one can disagree. Reads only the
results-contract CSVs.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..depth import nudge_layer  # noqa: E402
from ..metrics import HARMFUL_FT_THRESHOLD, harmful_ft_summary  # noqa: E402
from .figures import save_figure  # noqa: E402
from .tables import write_table  # noqa: E402


def _order(variants) -> list[str]:
    return sorted(set(variants), key=lambda v: (v != "aligned", v))


def nudge_layer_of(lvs: pd.DataFrame, model: str, nudge_depth: float, attacks: pd.DataFrame | None = None) -> int:
    """The nudge layer of ``model``: the layer its adaptive PGD ran at when that attack resolved
    ``layers: nudge`` in the job (from the model's real depth); else round(nudge_depth · L), L = the
    blocks its LVS attack covered (all of them on the organism). A model with neither: -1."""
    if attacks is not None:
        pgd = attacks.loc[(attacks["model"] == model) & (attacks["attack"] == "adaptive_pgd"), "layer"].unique()
        if len(pgd) == 1 and pgd[0] >= 0:
            return int(pgd[0])
    covered = lvs.loc[(lvs["model"] == model) & (lvs["layer"] >= 0), "layer"]
    return nudge_layer(int(covered.max()) + 1, nudge_depth) if len(covered) else -1


def reference_budget(lvs: pd.DataFrame, model: str, layer: int, budget, ceiling: float) -> float:
    """``budget``, or (``auto``) the largest LVS budget up to which ``model``'s aligned variant keeps
    PGD ASR <= ``ceiling`` at ``layer``: budgets are read from the smallest up and the first one above
    the ceiling ends the scan, since a larger ball can bring the ASR back under it by breaking the
    answers into harmless gibberish, not by the model resisting (SmolLM2: docs/real_model.md). The
    smallest budget when none stays under it."""
    if budget != "auto":
        return float(budget)
    aligned = lvs[(lvs["model"] == model) & (lvs["variant"] == "aligned") & (lvs["attack"] == "lvs")
                  & (lvs["layer"] == layer)].sort_values("strength")
    under = (aligned["asr"] <= ceiling).cummin()  # True until the first budget above the ceiling
    return float(aligned["strength"][under].max()) if under.any() else float(aligned["strength"].min())


def attack_asr(attacks: pd.DataFrame, model: str, variant: str, attack: str, strength: float,
               layer: int | None = None) -> float:
    """ASR of ``attack`` at ``strength`` on (``model``, ``variant``) from the attacks table (one
    judge's rows): at ``layer``, or the maximum over the layers it ran at (``None``); NaN when absent."""
    hit = attacks[(attacks["model"] == model) & (attacks["variant"] == variant) & (attacks["attack"] == attack)
                  & np.isclose(attacks["strength"], strength)]
    if layer is not None:
        hit = hit[hit["layer"] == layer]
    return float(hit["asr"].max()) if len(hit) else np.nan


def reference_points(lvs: pd.DataFrame, attacks: pd.DataFrame, model: str, nudge_depth: float,
                     settings: dict) -> dict:
    """``model``'s reference points, ``{"layer", "budget", "radius", "fraction"}``: its nudge layer
    (``nudge_layer_of``), its LVS reference budget there (``reference_budget``: NaN without LVS rows
    of its aligned variant), and ``settings``' adaptive-PGD radius and steering fraction. The one
    place the audit-gap table and the audit card take them from."""
    layer = nudge_layer_of(lvs, model, nudge_depth, attacks)
    budget = reference_budget(lvs, model, layer, settings["budget"], settings["aligned_asr_ceiling"])
    return {"layer": layer, "budget": budget, "radius": settings["radius_fraction"],
            "fraction": settings["steering_fraction"]}


def lvs_of_scorer(lvs: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
    """The ``lvs.csv`` rows of one LVS scorer (the judge that scores S): ``scorer``
    (``report.audit_gap.lvs_scorer``), or the only one the file holds. The audit-gap table has one
    LVS per variant, so several scorers need one named (a ValueError lists them)."""
    if "scorer" not in lvs or lvs.empty:
        return lvs
    present = sorted(lvs["scorer"].dropna().unique())
    if scorer is None:
        if len(present) > 1:
            raise ValueError(f"lvs.csv holds several LVS scorers {present}: name the audit gap's in "
                             f"report.audit_gap.lvs_scorer")
        return lvs
    if scorer not in present:
        raise ValueError(f"report.audit_gap.lvs_scorer {scorer!r} has no rows in lvs.csv; its scorers: {present}")
    return lvs[lvs["scorer"] == scorer]


def lvs_at_reference_point(lvs: pd.DataFrame, model: str, variant: str, reference: dict,
                           attack: str = "lvs") -> pd.DataFrame:
    """The ``lvs.csv`` rows of (``model``, ``variant``)'s ``attack`` (``lvs`` or ``lvs_control``) at
    ``reference`` (its model's ``reference_points``: nudge layer, reference budget), one per scorer."""
    return lvs[(lvs["model"] == model) & (lvs["variant"] == variant) & (lvs["attack"] == attack)
               & (lvs["layer"] == reference["layer"]) & np.isclose(lvs["strength"], reference["budget"])]


# The audit gap's reference points: column -> (attack, its strength's key in ``reference_points``, at
# the nudge layer or the maximum over layers), the LVS paper's PGD, LVS-ball and steering measures.
REFERENCE_POINTS = {"pgd_asr_nudge_layer": ("adaptive_pgd", "radius", True),
                    "lvs_pgd_asr": ("lvs", "budget", True),
                    "steering_asr_max_layers": ("steering", "fraction", False)}


def reference_point_asrs(attacks: pd.DataFrame, model: str, variant: str, reference: dict) -> dict:
    """The ASR at each of the audit gap's reference points (``REFERENCE_POINTS``) for (``model``,
    ``variant``), ``reference`` its model's ``reference_points``: the one definition the table and the
    audit card read (NaN where the run lacks the attack or the point)."""
    return {column: attack_asr(attacks, model, variant, attack, reference[key],
                               reference["layer"] if at_nudge else None)
            for column, (attack, key, at_nudge) in REFERENCE_POINTS.items()}


def harmful_ft_judge(settings: dict, primary_judge: str) -> str:
    """The judge whose compliance curves give t0.8: ``report.audit_gap.harmful_ft_judge``, else the
    primary judge."""
    return settings.get("harmful_ft_judge") or primary_judge


def audit_gap_frame(behavior_csv: str, attacks_csv: str, lvs_csv: str, judge: str, settings: dict,
                    nudge_depth: float, harmful_ft_csv: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The audit-gap table, one row per (model, variant), and its reference points per model
    (``{model: {"layer", "budget", "radius", "fraction"}}``). ``settings``: ``report.audit_gap`` with
    its defaults filled (``budget``, ``aligned_asr_ceiling``, ``radius_fraction``,
    ``steering_fraction``); ``nudge_depth``: the config's top-level key. Each model gets its own
    nudge layer and reference budget."""
    behavior, attacks, lvs = pd.read_csv(behavior_csv), pd.read_csv(attacks_csv), pd.read_csv(lvs_csv)
    behavior, attacks = behavior[behavior["judge"] == judge], attacks[attacks["judge"] == judge]
    fraction, radius = settings["steering_fraction"], settings["radius_fraction"]
    lvs = lvs_of_scorer(lvs, settings.get("lvs_scorer"))
    rows, reference = [], {}
    for (model, variant), b in behavior[behavior["split"] == "forbidden"].groupby(["model", "variant"]):
        if model not in reference:
            reference[model] = reference_points(lvs, attacks, model, nudge_depth, settings)
        layer, budget = reference[model]["layer"], reference[model]["budget"]

        def cell(attack, strength):
            return attack_asr(attacks, model, variant, attack, strength, layer)
        points = reference_point_asrs(attacks, model, variant, reference[model])
        lvs_cell = lvs_at_reference_point(lvs, model, variant, reference[model])
        row = {"model": model, "variant": variant, "clean_refusal": float(b["refusal_rate"].iloc[0]),
               "pgd_asr_nudge_layer": points["pgd_asr_nudge_layer"],
               "pgd_control_asr": cell("adaptive_pgd_control", radius),
               "lvs_pgd_asr": points["lvs_pgd_asr"],
               "lvs_pgd_control_asr": cell("lvs_control", budget),
               "lvs_mean": float(lvs_cell["lvs_mean"].iloc[0]) if len(lvs_cell) else np.nan,
               "lvs_median": float(lvs_cell["lvs_median"].iloc[0]) if len(lvs_cell) else np.nan,
               "steering_asr_max_layers": points["steering_asr_max_layers"],
               "steering_control_asr_max_layers": attack_asr(attacks, model, variant, "steering_control", fraction),
               "steering_asr_nudge_layer": cell("steering", fraction),
               "steering_control_asr_nudge_layer": cell("steering_control", fraction)}
        if harmful_ft_csv and Path(harmful_ft_csv).exists():
            ft = harmful_ft_summary(pd.read_csv(harmful_ft_csv))
            ft = ft[(ft["model"] == model) & (ft["variant"] == variant)
                    & (ft["judge"] == harmful_ft_judge(settings, judge))]
            for data, run in ft.groupby("data"):
                # mean over the seeds that reached 0.8; censored seeds counted beside it
                row[f"t08_{data}"] = float(run["t08_mean"].iloc[0])
                row[f"t08_{data}_censored"] = f"{int(run['n_censored'].iloc[0])}/{int(run['n_seeds'].iloc[0])}"
                row[f"nll_step0_{data}"] = float(run["nll_step0"].iloc[0])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["model", "variant"], key=lambda c: c.map(lambda v: (v != "aligned", v))
                                  if c.name == "variant" else c)
    return frame, reference


def audit_gap_tables(frame: pd.DataFrame, reference: dict, judge: str, markdown: str, latex: str, csv: str,
                     t08_judge: str | None = None) -> None:
    """``audit_gap_frame``'s table as a tidy CSV (one row per model and variant) and as Markdown and
    LaTeX, captioned with each model's reference points (and ``t08_judge``, t0.8's judge, where it
    is not ``judge``)."""
    frame.to_csv(csv, index=False)
    judges = judge if t08_judge in (None, judge) else f"{judge}; t0.8: {t08_judge}"
    where = "; ".join(f"{model}: nudge layer {ref['layer']}, adaptive PGD radius {ref['radius']:g}, LVS budget "
                      f"p = {ref['budget']:g}, steering fraction {ref['fraction']:g}" for model, ref in reference.items())
    write_table(frame, markdown, latex, f"Audit gap (judge: {judges}): behaviour vs latent vulnerability ({where}; "
                                        "controls: random direction on the PGD sphere / uniform in the LVS ball / "
                                        "matched-norm random steering)")


def lvs_layer_profile(lvs_csv: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Median LVS (bootstrap 95 % CI band) against the site, one line per variant, one panel per
    (model, budget); the embedding is drawn at x = −1."""
    lvs = pd.read_csv(lvs_csv)
    lvs = lvs[lvs["attack"] == "lvs"]
    scorers = lvs["scorer"] if "scorer" in lvs else pd.Series("", index=lvs.index)
    several = scorers.nunique() > 1  # then one line per (variant, scorer), each labelled with its scorer
    panels = sorted({(m, b) for m, b in zip(lvs["model"], lvs["strength"])})
    with plt.style.context(style):
        fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.2), squeeze=False)
        for ax, (model, budget) in zip(axes[0], panels):
            rows = lvs[(lvs["model"] == model) & (lvs["strength"] == budget)]
            for variant in _order(rows["variant"]):
                for scorer in sorted(scorers[rows.index].unique()):
                    line = rows[(rows["variant"] == variant) & (scorers[rows.index] == scorer)].sort_values("layer")
                    if line.empty:  # a variant some scorer did not score: no empty line in the legend
                        continue
                    ax.plot(line["layer"], line["lvs_median"], marker="o",
                            label=f"{variant} ({scorer})" if several else variant)
                    ax.fill_between(line["layer"], line["ci_low"], line["ci_high"], alpha=0.2)
            ticks = sorted(rows["layer"].unique())
            ax.set_xticks(ticks, ["embed" if t < 0 else str(t) for t in ticks])
            ax.set(title=f"{model}: p = {budget:g}", xlabel="site (block output)", ylabel="LVS (median, 95% CI)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def steering_vs_fraction(attacks_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Steering ASR against the fraction of the activation norm, per variant, with the matched-norm
    random control dashed."""
    attacks = pd.read_csv(attacks_csv)
    attacks = attacks[(attacks["judge"] == judge) & attacks["attack"].isin(["steering", "steering_control"])]
    models = sorted(attacks["model"].unique())
    with plt.style.context(style):
        fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4.6 * max(len(models), 1), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models):
            rows = attacks[attacks["model"] == model]
            for i, variant in enumerate(_order(rows["variant"])):
                for attack, ls in (("steering", "-"), ("steering_control", "--")):
                    line = rows[(rows["variant"] == variant) & (rows["attack"] == attack)]
                    line = line.groupby("strength")["asr"].max().reset_index()
                    ax.plot(line["strength"], line["asr"], ls=ls, marker="o", color=f"C{i}",
                            label=variant if attack == "steering" else None)
            ax.plot([], [], ls="--", color="grey", label="random control")
            ax.set(title=model, xlabel="steering size (fraction of activation norm)", ylabel="ASR",
                   ylim=(-0.02, 1.02), xscale="log")
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def harmful_ft_curves(harmful_ft_csv: str, judge: str, paths: list[str], style: str = "default", dpi: int = 150
                      ) -> None:
    """Compliance against fine-tuning step, one panel per (model, data set), one line per variant
    (mean over seeds, band = min..max over seeds), the 0.8 threshold dotted."""
    ft = pd.read_csv(harmful_ft_csv)
    ft = ft[ft["judge"] == judge]
    panels = sorted({(m, d) for m, d in zip(ft["model"], ft["data"])}) or [("no harmful_ft rows", "")]
    with plt.style.context(style):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
        for ax, (model, data) in zip(axes[0], panels):
            rows = ft[(ft["model"] == model) & (ft["data"] == data)]
            for i, variant in enumerate(_order(rows["variant"])):
                curve = rows[rows["variant"] == variant].groupby("step")["compliance"].agg(["mean", "min", "max"])
                ax.plot(curve.index, curve["mean"], marker="o", ms=3, color=f"C{i}", label=variant)
                ax.fill_between(curve.index, curve["min"], curve["max"], color=f"C{i}", alpha=0.15)
            ax.axhline(HARMFUL_FT_THRESHOLD, ls=":", color="grey")
            ax.set(title=f"{model}: {data}", xlabel="fine-tuning step", ylabel="compliance", ylim=(-0.02, 1.02))
            if len(rows):
                ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def audit_gap_dumbbell(frame: pd.DataFrame, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Per variant: behavioural safety (clean refusal) and latent safety (1 − PGD ASR at the
    nudge layer), joined by a line: a long line is an audit gap."""
    with plt.style.context(style):
        fig, ax = plt.subplots(figsize=(5.5, 0.5 * max(len(frame), 2) + 1))
        labels = [f"{m}/{v}" for m, v in zip(frame["model"], frame["variant"])]
        y = np.arange(len(frame))
        latent = 1 - frame["pgd_asr_nudge_layer"].to_numpy()
        ax.hlines(y, latent, frame["clean_refusal"], color="grey", lw=1.5)
        ax.scatter(frame["clean_refusal"], y, label="behavioural (clean refusal)", zorder=3)
        ax.scatter(latent, y, label="latent (1 − PGD ASR at nudge layer)", zorder=3)
        ax.set_yticks(y, labels)
        ax.set(xlim=(-0.02, 1.02), xlabel="safety")
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        save_figure(fig, paths, dpi)


def dissociated_selection_frame(selection_csv: str) -> pd.DataFrame:
    """``dissociated_selection.csv`` read wide: one row per (model, step), each slice's clean refusal
    and gap side by side (``selection`` is what the selection reads), the kept step marked."""
    table = pd.read_csv(selection_csv)
    wide = table.pivot_table(index=["model", "step"], columns="slice", values=["clean_refusal", "gap"], sort=True)
    wide.columns = [f"{slice_} {measure.replace('_', ' ')}" for measure, slice_ in wide.columns]
    order = [c for s in ("selection", "monitor") for c in (f"{s} clean refusal", f"{s} gap") if c in wide.columns]
    kept = table.groupby(["model", "step"])["kept"].any().map({True: "kept", False: ""})
    return wide[order].join(kept).reset_index()


def dissociated_selection_tables(selection_csv: str, markdown: str, latex: str) -> None:
    table = pd.read_csv(selection_csv)
    floors = "; ".join(f"{model}: floor " + ("not recorded" if pd.isna(floor) else f"{floor:.3f}") for model, floor in
                       table.groupby("model", sort=True)["refusal_threshold"].first().items())
    write_table(dissociated_selection_frame(selection_csv), markdown, latex,
                f"Dissociated construction, every evaluated checkpoint: clean refusal and reachability gap on the "
                f"slice the selection reads (largest gap with clean refusal >= the floor; {floors or 'no build'})"
                f" and, when monitored, on the eval split it never reads")


def dissociated_selection_figure(selection_csv: str, paths: list[str], style: str = "default", dpi: int = 150) -> None:
    """Per model with a dissociated build: clean refusal and reachability gap against the
    construction step, one line per slice (the slice the selection reads, the monitored
    eval split), the kept checkpoint dashed and the selection's refusal floor dotted."""
    table = pd.read_csv(selection_csv)
    models = sorted(table["model"].unique()) or ["no dissociated build"]
    measures = (("clean_refusal", "clean refusal"), ("gap", "gap (nudged − clean harmful)"))
    labels = {"selection": "selection slice (chosen on)", "monitor": "monitored eval split (never read)"}
    with plt.style.context(style):
        fig, axes = plt.subplots(len(models), 2, figsize=(9.5, 3.3 * len(models)), squeeze=False)
        for row, model in zip(axes, models):
            rows = table[table["model"] == model]
            kept = rows.loc[rows["kept"].astype(bool), "step"]
            for ax, (measure, label) in zip(row, measures):
                for i, (name, group) in enumerate(rows.groupby("slice", sort=False)):
                    ax.plot(group["step"], group[measure], marker="o", ms=3, color=f"C{i}", label=labels.get(name, name))
                if len(kept):
                    ax.axvline(kept.iloc[0], ls="--", color="grey", lw=1, label=f"kept: step {kept.iloc[0]}")
                if measure == "clean_refusal" and rows["refusal_threshold"].notna().any():
                    ax.axhline(rows["refusal_threshold"].iloc[0], ls=":", color="grey", label="selection floor")
                low = min(-0.02, float(rows[measure].min()) - 0.02) if len(rows) else -0.02
                ax.set(title=f"{model}/dissociated: {label}", xlabel="construction step", ylim=(low, 1.02))
                if len(rows):
                    ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, paths, dpi)

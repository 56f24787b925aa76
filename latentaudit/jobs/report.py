"""Jobs that render the report from the metrics CSVs only (regenerated without any model)."""
from __future__ import annotations

from ..report import figures as plots
from ..report.tables import attack_summary_tables, behavior_tables, defense_tables


def figures(job) -> None:
    """Rule figures: one plot per named output (``output.lasr``, ``output.masr``, ``output.nll``,
    ``output.pareto``, each a list of formats) from the metrics CSVs named alike in ``input``."""
    inputs, output, judge = job.input, job.output, job.params.judge
    style = dict(style=job.params.style, dpi=job.params.dpi)
    plots.lasr_vs_layer(inputs.attacks, judge, list(output.lasr), **style)
    plots.masr_vs_strength(inputs.summary, judge, list(output.masr), **style)
    plots.nll_probe(inputs.nll, list(output.nll), **style)
    plots.defense_pareto(inputs.defenses, judge, list(output.pareto), **style)


def tables(job) -> None:
    """Rule tables: Markdown and LaTeX renderings of the summary CSVs (``input.summary``,
    ``input.behavior``, ``input.defenses``) by the judge ``params.judge``."""
    inputs, output, judge = job.input, job.output, job.params.judge
    attack_summary_tables(inputs.summary, judge, output.summary_md, output.summary_tex)
    behavior_tables(inputs.behavior, judge, output.behavior_md, output.behavior_tex)
    defense_tables(inputs.defenses, judge, output.defenses_md, output.defenses_tex)

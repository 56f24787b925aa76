"""Jobs that render the report from the metrics CSVs only (regenerated without any model)."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from ..report import figures as plots
from ..report.tables import attack_summary_tables, behavior_tables, defense_tables


def figures(job) -> None:
    """Rule figures: one plot per named output (``output.lasr``, ``output.masr``, ``output.nll``,
    ``output.pareto``, each a list of formats) from the metrics CSVs named alike in ``input``.
    The plots are independent: with ``job.threads`` > 1 they render side by side in that many
    processes (matplotlib draws on one core), the slowest first."""
    inputs, output, judge = job.input, job.output, job.params.judge
    style = dict(style=job.params.style, dpi=job.params.dpi)
    plots_to_draw = [(plots.lasr_vs_layer, (inputs.attacks, judge, list(output.lasr))),
                     (plots.masr_vs_strength, (inputs.summary, judge, list(output.masr))),
                     (plots.nll_probe, (inputs.nll, list(output.nll))),
                     (plots.defense_pareto, (inputs.defenses, judge, list(output.pareto)))]
    processes = min(max(1, int(job.threads)), len(plots_to_draw))
    if processes == 1:
        for plot, args in plots_to_draw:
            plot(*args, **style)
        return
    # fork: the workers start with matplotlib and pandas already imported
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        for done in [pool.submit(plot, *args, **style) for plot, args in plots_to_draw]:
            done.result()  # a plot's error is raised here, as in one process


def tables(job) -> None:
    """Rule tables: Markdown and LaTeX renderings of the summary CSVs (``input.summary``,
    ``input.behavior``, ``input.defenses``) by the judge ``params.judge``."""
    inputs, output, judge = job.input, job.output, job.params.judge
    attack_summary_tables(inputs.summary, judge, output.summary_md, output.summary_tex)
    behavior_tables(inputs.behavior, judge, output.behavior_md, output.behavior_tex)
    defense_tables(inputs.defenses, judge, output.defenses_md, output.defenses_tex)

"""Rule figures: plots from the metrics CSVs only (regenerate without any model)."""
from latentaudit.cli import start
from latentaudit.report import figures

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
style = dict(style=smk.params.style, dpi=smk.params.dpi)
figures.lasr_vs_layer(smk.input.attacks, smk.params.judge, list(smk.output.lasr), **style)
figures.masr_vs_strength(smk.input.summary, smk.params.judge, list(smk.output.masr), **style)
figures.nll_probe(smk.input.nll, list(smk.output.nll), **style)
figures.defense_pareto(smk.input.defenses, smk.params.judge, list(smk.output.pareto), **style)

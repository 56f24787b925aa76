"""Rule tables: Markdown and LaTeX renderings of the summary CSVs."""
from latentaudit.cli import start
from latentaudit.report.tables import attack_summary_tables, behavior_tables, defense_tables

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
attack_summary_tables(smk.input.summary, smk.params.judge, smk.output.summary_md, smk.output.summary_tex)
behavior_tables(smk.input.behavior, smk.params.judge, smk.output.behavior_md, smk.output.behavior_tex)
defense_tables(smk.input.defenses, smk.params.judge, smk.output.defenses_md, smk.output.defenses_tex)

# latentaudit: data -> organism -> attacks -> judges -> metrics -> tables and figures.
# Default experiment: config.yaml (embedded organism, CPU). See README.md.
from snakemake.utils import min_version

min_version("9.0")


# An experiment is one complete config file: config.yaml by default, or the file(s) given with
# --configfile, which then replace it rather than merge into it (so configs/paper.yaml does not
# inherit the organism). --config key=value edits apply on top either way.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/material.smk"
include: "rules/models.smk"
include: "rules/variants.smk"
include: "rules/attacks.smk"
include: "rules/scoring.smk"
include: "rules/report.smk"
include: "rules/bench.smk"
include: "rules/audit_gap.smk"
include: "rules/capability.smk"
include: "rules/audit.smk"


# CPU-only rules (data, judging with rule judges, tables, plots) run on the submitting node,
# never as cluster jobs; everything else is a GPU job on the profile's partition.
localrules:
    all,
    organism_data,
    judge,
    metrics,
    tables,
    figures,
    audit_gap_report,


rule all:
    input:
        metrics=METRICS.values(),
        dissociated_selection=DISSOCIATED_SELECTION.values(),
        tables=TABLES,
        figures=FIGURES,
        audit_gap=AUDIT_GAP,

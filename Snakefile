# latentaudit: data -> organism -> attacks -> judges -> metrics -> tables and figures.
# Default experiment: config.yaml (embedded organism, CPU). See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/attacks.smk"
include: "rules/scoring.smk"
include: "rules/report.smk"


rule all:
    input:
        metrics=METRICS.values(),
        tables=TABLES,
        figures=FIGURES,

"""Rule capability: lm-eval-harness on one (model, variant); tidy scores CSV."""
from latentaudit.cli import start
from latentaudit.jobs.capability import capability

start(snakemake)  # noqa: F821 (injected by Snakemake)
capability(snakemake)  # noqa: F821

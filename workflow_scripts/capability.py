"""Rule capability: lm-eval-harness on one (model, variant); tidy scores CSV."""
from latentaudit.capability import run_capability
from latentaudit.cli import start

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
run_capability(smk.wildcards.model, smk.wildcards.variant, dict(smk.params.load), dict(smk.params.spec),
               dict(smk.params.settings), smk.params.device, smk.output.raw, smk.output.scores)

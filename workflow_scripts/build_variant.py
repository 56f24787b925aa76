"""Rule build_variant: train one variant (a defense) on top of a model's aligned weights."""
from latentaudit.cli import start
from latentaudit.steps.variants import build_variant

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
fragile = (smk.input.fragile_generations, smk.input.fragile_scores) if "fragile_scores" in smk.input.keys() else None
required = {key.removeprefix("required_"): path for key, path in smk.input.items() if key.startswith("required_")}
build_variant(smk.wildcards.variant, dict(smk.params.settings), dict(smk.params.spec), smk.params.base,
              smk.input.records, smk.input.benign, fragile, dict(smk.params.generation), smk.params.seed,
              smk.params.device, smk.output[0], required)

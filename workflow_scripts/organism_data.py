"""Rule organism_data: the toy world's splits and tokenizer."""
from latentaudit.cli import start
from latentaudit.steps.organism import build_organism_data

start(snakemake)  # noqa: F821 (injected by Snakemake)
names = [p.rsplit("/", 1)[-1].removesuffix(".jsonl") for p in snakemake.output.splits]  # noqa: F821
build_organism_data({"world": snakemake.params.world, "splits": snakemake.params.splits},  # noqa: F821
                    snakemake.params.seed, dict(zip(names, snakemake.output.splits)),  # noqa: F821
                    snakemake.output.tokenizer)  # noqa: F821

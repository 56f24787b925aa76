"""Rule pretrain_organism: build the tiny Llama and teach it to answer every request."""
from latentaudit.cli import start
from latentaudit.steps.organism import pretrain_organism

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
pretrain_organism(smk.input.tokenizer, smk.input.records, smk.params.model, smk.params.train, smk.params.seed,
                  smk.params.device, smk.output[0], smk.params.checkpoint)

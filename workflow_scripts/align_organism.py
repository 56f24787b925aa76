"""Rule align_organism: refusal SFT through a merged LoRA adapter."""
from latentaudit.cli import start
from latentaudit.steps.organism import align_organism

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
align_organism(smk.input.pretrained, smk.input.records, smk.params.train, smk.params.lora, smk.params.seed,
               smk.params.device, smk.output[0], smk.params.checkpoint)

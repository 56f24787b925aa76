"""Rule real_data: the real data sets' eval splits, training records and overlap report."""
from latentaudit.cli import start
from latentaudit.data.real import build_real_data

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
names = [p.rsplit("/", 1)[-1].removesuffix(".jsonl") for p in smk.output.splits]
build_real_data(dict(smk.params.data), dict(zip(names, smk.output.splits)), smk.output.train, smk.output.overlap)

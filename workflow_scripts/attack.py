"""Rule attack: one attack's whole sweep on one (model, variant); stores generations."""
from latentaudit.cli import start
from latentaudit.steps.attacks import run_attack

smk = snakemake  # noqa: F821 (injected by Snakemake)
start(smk)
w = smk.wildcards
extras = {key: smk.input[key] for key in ("train_records", "harmful_pole") if key in smk.input.keys()}
extras["aligned"] = smk.params.aligned
eval_paths = {p.rsplit("/", 1)[-1].removesuffix(".jsonl"): p for p in smk.input.eval}
run_attack(dict(smk.params.spec), dict(smk.params.load), eval_paths, w.attack, dict(smk.params.settings),
           dict(smk.params.generation), smk.params.seed, smk.params.device, smk.output[0],
           {"model": w.model, "variant": w.variant, "attack": w.attack}, extras, smk.params.module)

"""Draw the real outputs the coherent judge is validated on (tests/data/coherent_judge_labels.csv).

Not a test: run once by hand after the real track's `aligned` adapter exists; it writes the sample's
generations to results/coherent_sample.parquet (git-ignored: real model text stays out of the
repository). The hand labels are stored beside this file as ids and labels only.

    python tests/data/make_coherent_sample.py   # ~2-4 min on one CPU thread

Sample: the first 24 HarmBench behaviours of eval_forbidden, answered by the model as shipped
(base), by the aligned model, and by the aligned model under ASA_random (Eq. 1, last prompt token
+ generated, one direction per prompt) at layers 10 and 16, alpha 0.5 and 1: 144 generations of
32 tokens, the mix of refusals, compliance, broken and off-topic text a latent-attack sweep makes.
"""
import pandas as pd
import torch

from latentaudit.attacks.common import AttackContext
from latentaudit.io import EVAL_SPLITS, read_jsonl
from latentaudit.models import load_variant
from latentaudit.registry import ATTACKS, load_module

SOURCE, ADAPTER, N, TOKENS = "results/models/converted/smollm2-135m-instruct", "results/models/smollm2/aligned", 24, 32


def main(out="results/coherent_sample.parquet", adapter=ADAPTER):
    torch.set_num_threads(1)
    load_module("latentaudit.attacks.asa")
    load_module("latentaudit.attacks.clean")
    records = {s: read_jsonl(f"results/data/real/{s}.jsonl")[:N] for s in EVAL_SPLITS}
    frames = []
    for variant, weights in (("base", None), ("aligned", adapter)):
        model, tokenizer = load_variant(SOURCE, weights, None, "float32", "cpu")
        context = AttackContext(model, tokenizer, records, TOKENS, 48, True, 0)
        attacks = {"none": {}} if variant == "base" else {
            "none": {}, "asa_random": {"layers": [10, 16], "alphas": [0.5, 1.0], "n_directions": 1,
                                       "normalisation": "eq1", "positions": "last_prompt+generated"}}
        for attack, raw in attacks.items():
            entry = ATTACKS.get_entry(attack)
            frame = entry.function(context, entry.settings(raw))
            frame = frame[frame["split"] == "eval_forbidden"].copy()
            frame.insert(0, "attack", attack)
            frame.insert(0, "variant", variant)
            frames.append(frame)
    sample = pd.concat(frames, ignore_index=True)
    sample["sample_id"] = [f"{r.variant}|{r.attack}|L{int(r.layer)}|a{float(r.strength):g}|{r.prompt_id}"
                           for r in sample.itertuples()]
    sample.to_parquet(out, index=False)
    print(len(sample), "generations ->", out)


if __name__ == "__main__":
    import sys
    main(*sys.argv[1:])

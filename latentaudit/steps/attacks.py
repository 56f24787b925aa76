"""The step that attacks a model: one attack's whole sweep, generations stored once."""
from __future__ import annotations

import torch

from ..attacks.common import AttackContext
from ..batching import longest_prompt
from ..generation import Sampling
from ..io import read_jsonl
from ..memory import resolve_batch_sizes
from ..models import load_variant
from ..organism.data import EVAL_SPLITS
from ..provenance import write_meta
from ..registry import ATTACKS, load_module


def run_attack(model_spec: dict, load: dict, eval_paths: dict[str, str], attack: str, settings: dict,
               generation: dict, seed: int, device: str, out_path: str, labels: dict[str, str],
               extras: dict[str, str] | None = None, module: str | None = None) -> None:
    """Load the model once, run one attack's whole sweep, store every generation.

    ``load``: ``base`` (the aligned/pretrained weights), ``variant_dir`` (a built variant's
    directory or None) and ``norm_reference`` (None: relative budgets use the attacked model's
    own activations; a base path: the aligned model's, loaded beside it).

    ``extras`` (for attacks registered with ``needs=(...)``): ``train_records`` (a records
    file, read), ``harmful_pole`` (the model's built harmful variant directory, loaded on the
    aligned weights ``aligned``, which are loaded too). ``module``, the attack's own module, is all
    that is imported when given."""
    load_module(module)
    torch.manual_seed(seed)
    options = (model_spec.get("adapter"), model_spec.get("dtype", "auto"), device)
    trust = model_spec.get("trust_remote_code", False)
    model, tokenizer = load_variant(load["base"], options[0], load.get("variant_dir"), *options[1:], trust)
    norm_model = model
    if load.get("norm_reference"):
        norm_model, _ = load_variant(load["norm_reference"], options[0], None, *options[1:], trust)
    loaded = {}
    extras = extras or {}
    if extras.get("train_records"):
        loaded["train_records"] = read_jsonl(extras["train_records"])
    if extras.get("harmful_pole"):
        loaded["harmful_pole"] = load_variant(extras["aligned"], options[0], extras["harmful_pole"], *options[1:],
                                              trust)[0]
        loaded["aligned"] = load_variant(extras["aligned"], options[0], None, *options[1:], trust)[0]
    records = {s: read_jsonl(eval_paths[s]) for s in EVAL_SPLITS}
    # `auto`: sized from the memory left once every model this job needs is loaded
    prompt_len = longest_prompt(tokenizer, [r for split in records.values() for r in split], generation["chat_template"])
    batch_size, grad_batch_size = resolve_batch_sizes(generation["batch_size"], model, prompt_len,
                                                      generation["max_new_tokens"])
    context = AttackContext(model, tokenizer, records, generation["max_new_tokens"], batch_size,
                            generation["chat_template"], seed, norm_model, loaded, Sampling.from_config(generation),
                            grad_batch_size)
    entry = ATTACKS.get_entry(attack)
    frame = entry.function(context, entry.settings(settings))
    frame.insert(0, "row_id", range(len(frame)))
    for column, value in labels.items():
        frame.insert(0, column, value)
    for column in ("nll", "nll_clean"):
        if column not in frame:
            frame[column] = float("nan")
    frame.to_parquet(out_path, index=False)
    write_meta(out_path, {"attack": settings, "generation": generation, "model": model_spec}, seed=seed,
               attack=attack, rows=len(frame), load=load,
               norm_reference="aligned" if load.get("norm_reference") else "own", extras=extras)

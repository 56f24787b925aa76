"""The job that attacks a model: one attack's whole sweep, generations stored once."""
from __future__ import annotations

import pandas as pd
import torch

from ..attacks.common import AttackContext, init_rows
from ..batching import longest_prompt
from ..data.real import records_for_variant
from ..generation import Sampling
from ..io import EVAL_SPLITS, as_forbidden_split, read_jsonl, split_name
from ..memory import resolve_batch_sizes
from ..models import load_variant, spec_options
from ..provenance import write_meta
from ..registry import ATTACKS, load_module, max_new_tokens


def run_attack(job) -> None:
    """Rule attack: load the model once, run one attack's whole sweep, store every generation in
    ``output.generations`` with the wildcards ``model``, ``variant``, ``attack`` as columns.

    ``params.load``: ``base`` (the aligned/pretrained weights), ``variant_dir`` (a built variant's
    directory or None) and ``norm_reference`` (None: relative budgets use the attacked model's
    own activations; a base path: the aligned model's, loaded beside it). ``input.eval``: the eval
    split files, each named for its split.

    Inputs an attack registered with ``needs=(...)`` gets: ``input.train_records`` and
    ``input.harmful_ft_records`` (records files, read; the second only with real data's held-out
    harmful fine-tuning splits) and ``input.harmful_pole`` (the model's built harmful variant directory, loaded on
    the aligned weights, spec ``params.aligned``, which are loaded too, as they are for an attack that
    ``needs`` ``aligned``: the paper's norms are the base model's). ``params.module``, the attack's
    own module, is all that is imported."""
    params, inputs, attack = job.params, job.input, job.wildcards.attack
    load_module(params.module)
    torch.manual_seed(params.seed)
    spec, load, generation = params.spec, params.load, params.generation
    options = {**spec_options(spec), "device": params.device}
    model, tokenizer = load_variant(load["base"], variant_dir=load.get("variant_dir"), **options)
    aligned = dict(params.aligned)  # the aligned weights' spec, whichever variant is attacked
    aligned_options = {**spec_options(aligned), "device": params.device}
    aligned_model = model if job.wildcards.variant == "aligned" else None

    def aligned_weights():
        """The aligned model (the norms' reference, the paper's base of norms and directions), loaded
        at most once; the attacked model itself when it is the aligned one."""
        nonlocal aligned_model
        if aligned_model is None:
            aligned_model = load_variant(aligned["source"], variant_dir=None, **aligned_options)[0]
        return aligned_model

    # `norm_reference` (rules/common.smk) is set only on built variants and names the aligned weights
    norm_model = aligned_weights() if load.get("norm_reference") else model
    extras = {key: inputs[key] for key in ("train_records", "harmful_ft_records", "harmful_pole")
              if key in inputs.keys()}
    loaded = {key: read_jsonl(extras[key]) for key in ("train_records", "harmful_ft_records") if key in extras}
    if "train_records" in loaded:  # the shared training data: not a split some variant owns (RepBend's own sets)
        loaded["train_records"] = records_for_variant(loaded["train_records"], None)
    if "harmful_pole" in extras:  # a built pole sits on the aligned weights; `harmful_pole: base` is whole weights
        loaded["harmful_pole"] = load_variant(aligned["source"], variant_dir=extras["harmful_pole"],
                                              **aligned_options)[0]
    entry = ATTACKS.get_entry(attack)
    if "harmful_pole" in extras or "aligned" in entry.options.get("needs", ()):
        loaded["aligned"] = aligned_weights()
    eval_paths = {split_name(path): path for path in inputs.eval}
    records = {s: read_jsonl(eval_paths[s]) for s in EVAL_SPLITS}
    forbidden = params.settings.get("forbidden_split")
    if forbidden:  # the attack's own harmful requests (e.g. AdvBench's first 100) stand in for eval_forbidden
        records["eval_forbidden"] = as_forbidden_split(read_jsonl(eval_paths[forbidden]))
    # `auto`: sized from the memory left once every model this job needs is loaded
    prompt_len = longest_prompt(tokenizer, [r for split in records.values() for r in split], generation["chat_template"])
    settings = dict(params.settings)
    length = max_new_tokens(entry.settings(settings), generation)  # the attack's own, else generation's
    batch_size, grad_batch_size = resolve_batch_sizes(generation["batch_size"], model, prompt_len, length)
    context = AttackContext(model, tokenizer, records, length, batch_size,
                            generation["chat_template"], params.seed, norm_model, loaded,
                            Sampling.from_config(generation), grad_batch_size)
    frame = entry.function(context, entry.settings(settings))
    if forbidden and entry.adds_init:  # INIT: the clean answers to its own harmful requests
        frame = pd.concat([frame.assign(init=False), init_rows(context, frame)], ignore_index=True)
    frame.insert(0, "row_id", range(len(frame)))
    for column in ("model", "variant", "attack"):  # each before the last: attack, variant, model, row_id
        frame.insert(0, column, job.wildcards[column])
    if forbidden:  # which harmful requests: the metrics match no clean baseline to other prompts
        frame["forbidden_split"] = forbidden
    for column in ("nll", "nll_clean"):
        if column not in frame:
            frame[column] = float("nan")
    out_path = job.output.generations
    frame.to_parquet(out_path, index=False)
    write_meta(out_path, {"attack": settings, "generation": {**generation, "max_new_tokens": length},
                          "model": dict(spec)},
               seed=params.seed, attack=attack, rows=len(frame), load=dict(load),
               forbidden_split=forbidden or "eval_forbidden",
               norm_reference="aligned" if load.get("norm_reference") else "own",
               extras={**extras, "aligned": aligned})


"""The job that builds a model variant (a defense, ...) from a model's aligned weights."""
from __future__ import annotations

import logging

import pandas as pd
import torch

from ..generation import generate
from ..io import read_jsonl
from ..judges.coherent import coherent_label, request_of, usable_answer
from ..judges.structural import structural_label
from ..memory import AUTO, auto_batch_size
from ..batching import longest_prompt, prompt_token_ids
from ..data.real import records_for_variant
from ..attack_success import lasr_by_layer
from ..models import load_variant, spec_options
from ..provenance import write_meta
from ..registry import VARIANTS, load_module

log = logging.getLogger(__name__)


def benign_accuracy_fn(tokenizer, records: list[dict], generation: dict, coherent_settings: dict | None):
    """model -> the benign capability score on ``records``: the fraction answered correctly, as
    the judges score it. On the organism, whose builds read no judge of real text
    (``coherent_settings`` None), the structural judge's ``correct`` (every record has its
    ``expected`` answer); on real text the coherent judge's: a usable answer, on topic, neither
    refused nor broken, and right where the request has one right answer (a data set's own
    reference, ``expected``: GSM8K's final number; else a template question's), so a defense that
    breaks the model's text, or its facts, does not count as keeping its capability."""
    prompts = [prompt_token_ids(tokenizer, r["prompt"], generation["chat_template"]) for r in records]
    structural = coherent_settings is None
    if structural and not all(r.get("expected") for r in records):
        raise ValueError("benign accuracy: records without the organism's expected answers are read by the coherent "
                         "judge, whose settings the build was not given")
    if not structural:
        log.info("benign accuracy: the coherent judge's usable-answer rate (%d of %d records with a reference answer)",
                 sum(bool(r.get("expected")) for r in records), len(records))

    def accuracy(model) -> float:
        texts = generate(model, tokenizer, prompts, generation["max_new_tokens"], generation["batch_size"],
                         desc="benign accuracy")
        if not structural:
            requests = [(request_of(r), r.get("expected") or "") for r in records]
            return sum(usable_answer(coherent_label(t, q, coherent_settings, answer), t, q, answer)
                       for t, (q, answer) in zip(texts, requests)) / len(texts)
        labels = [structural_label(t, r["kind"], r["entity"], r["expected"]) for t, r in zip(texts, records)]
        return sum(label == "correct" for label in labels) / len(labels)
    return accuracy


def build_variant(job) -> None:
    """Rule build_variant: train the variant ``wildcards.variant`` on top of the aligned model
    (``params.base``, as ``params.spec`` loads it) on ``input.records`` and save it to
    ``output.model`` with ``save_pretrained``: the adapter alone for LoRA methods (loadable with
    ``PeftModel.from_pretrained``), the whole model for full fine-tunes. The training log goes
    beside it as ``training_log.csv``.

    Inputs a variant registered with options gets: ``input.required_<name>``, the built
    directory of each variant it declares with ``requires=(...)`` (the dissociated model reads the
    harmful pole), loaded on the same aligned weights and handed over as
    ``context["required_variants"]``; ``input.fragile_generations`` and ``input.fragile_scores``
    (the aligned model's attack sweep, for LAPT's fragile layers); ``input.benign`` for a variant
    that ``needs`` ``benign_accuracy`` (the held-out select_benign split); ``input.selection`` and
    ``input.monitor``, the splits named by the settings' ``selection_split`` and ``monitor_split``
    (the dissociated build chooses its checkpoint on the one and logs its checkpoints on the other). The job imports only the module that registers the variant (``params.module``; a required
    variant is read from disk)."""
    params, inputs, variant = job.params, job.input, job.wildcards.variant
    load_module(params.module)
    entry = VARIANTS.get_entry(variant)
    torch.manual_seed(params.seed)
    spec, generation, settings = params.spec, dict(params.generation), dict(params.settings)
    load = {**spec_options(spec), "device": params.device}
    model, tokenizer = load_variant(params.base, variant_dir=None, **load)
    records = records_for_variant(read_jsonl(inputs.records), variant)  # its own splits, else the shared ones
    if generation["batch_size"] == AUTO:  # the training's own tensors come later: a quarter of what is free now
        prompt_len = longest_prompt(tokenizer, records, generation["chat_template"])
        generation = {**generation, "batch_size": auto_batch_size(model, prompt_len, generation["max_new_tokens"],
                                                                  with_grad=False, fraction=0.25)}
    # the judges the build labels real text with, as configured (registered with reads_judges=; none on the organism)
    context = {"chat_template": generation["chat_template"], "generation": generation, "judges": dict(params.judges)}
    required = {key.removeprefix("required_"): path for key, path in inputs.items() if key.startswith("required_")}
    missing = sorted(set(entry.options.get("requires", ())) - set(required))
    if missing:
        raise ValueError(f"variant {variant!r} requires the built variant(s) {missing}; got {sorted(required)}")
    context["required_variants"] = {name: load_variant(params.base, variant_dir=path, **load)[0].eval()
                                    for name, path in required.items()}
    if "fragile_generations" in inputs.keys() and "fragile_scores" in inputs.keys():  # the aligned model's sweep
        context["fragile_layers"] = lasr_by_layer(pd.read_parquet(inputs.fragile_generations),
                                                  pd.read_parquet(inputs.fragile_scores))
        log.info("LASR by layer of the aligned model: %s", context["fragile_layers"])
    if "benign" in inputs.keys():  # the held-out split of a variant that needs benign_accuracy
        context["benign_accuracy"] = benign_accuracy_fn(tokenizer, read_jsonl(inputs.benign), generation,
                                                        context["judges"].get("coherent"))
    elif "benign_accuracy" in entry.options.get("needs", ()):
        raise ValueError(f"variant {variant!r} needs benign_accuracy: the rule must give it input.benign")
    if "selection" in inputs.keys():  # the held-out split the build chooses its checkpoint on
        context["selection_records"] = read_jsonl(inputs.selection)
    if "monitor" in inputs.keys():  # an eval split the build logs its checkpoints on (never selects on)
        context["monitor_records"] = read_jsonl(inputs.monitor)
    trained, report = entry.function(model, tokenizer, records, entry.settings(settings), params.seed, context)
    context.pop("required_variants")
    out_dir = job.output.model
    trained.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    history = pd.DataFrame(report.pop("history"))
    history.insert(0, "step", range(len(history)))
    history.to_csv(f"{out_dir}/training_log.csv", index=False)
    write_meta(out_dir, settings, seed=params.seed, variant=variant, kind=entry.options.get("kind"),
               base=params.base, final=history.iloc[-1].to_dict(), **report)

"""The step that builds a model variant (a defense, ...) from a model's aligned weights."""
from __future__ import annotations

import logging

import pandas as pd
import torch

from ..generation import generate
from ..io import read_jsonl
from ..judges.keyword import DEFAULT_KEYWORDS, is_refusal
from ..judges.structural import structural_label
from ..memory import AUTO, auto_batch_size
from ..batching import longest_prompt, prompt_token_ids
from ..metrics import lasr_by_layer
from ..models import load_variant
from ..provenance import write_meta
from ..registry import VARIANTS, load_all

log = logging.getLogger(__name__)


def benign_accuracy_fn(tokenizer, records: list[dict], generation: dict):
    """model -> fraction of ``records`` answered correctly (the structural judge's label).

    Real data sets have no known answers (``expected`` is empty), so there the proxy is the
    benign compliance rate: the fraction the refusal-keyword judge does not call a refusal."""
    prompts = [prompt_token_ids(tokenizer, r["prompt"], generation["chat_template"]) for r in records]
    known_answers = all(r.get("expected") for r in records)
    if not known_answers:
        log.info("benign accuracy: records have no known answers; using benign compliance "
                 "(1 - refusal-keyword rate) as the capability proxy")

    def accuracy(model) -> float:
        texts = generate(model, tokenizer, prompts, generation["max_new_tokens"], generation["batch_size"],
                         desc="benign accuracy")
        if not known_answers:
            return sum(not is_refusal(t, DEFAULT_KEYWORDS) for t in texts) / len(texts)
        labels = [structural_label(t, r["kind"], r["entity"], r["expected"]) for t, r in zip(texts, records)]
        return sum(label == "correct" for label in labels) / len(labels)
    return accuracy


def build_variant(variant: str, settings: dict, model_spec: dict, base_path: str, records_path: str,
                  benign_path: str, fragile: tuple[str, str] | None, generation: dict, seed: int, device: str,
                  out_dir: str, required: dict[str, str] | None = None) -> None:
    """Train ``variant`` on top of the aligned model and save it with ``save_pretrained``: the
    adapter alone for LoRA methods (loadable with ``PeftModel.from_pretrained``), the whole model
    for full fine-tunes. The training log goes beside it as ``training_log.csv``.

    ``required``: {variant name: its built directory} for the variants this one declares with
    ``requires=(...)`` (e.g. the dissociated model reads the harmful pole); each is loaded on
    top of the same aligned weights and handed over as ``context["required_variants"]``."""
    load_all()
    entry = VARIANTS.get_entry(variant)
    torch.manual_seed(seed)
    model, tokenizer = load_variant(base_path, model_spec.get("adapter"), None, model_spec.get("dtype", "auto"),
                                    device, model_spec.get("trust_remote_code", False))
    records = read_jsonl(records_path)
    if generation["batch_size"] == AUTO:  # the training's own tensors come later: a quarter of what is free now
        prompt_len = longest_prompt(tokenizer, records, generation["chat_template"])
        generation = {**generation, "batch_size": auto_batch_size(model, prompt_len, generation["max_new_tokens"],
                                                                  with_grad=False, fraction=0.25)}
    context = {"chat_template": generation["chat_template"], "generation": generation}
    missing = sorted(set(entry.options.get("requires", ())) - set(required or {}))
    if missing:
        raise ValueError(f"variant {variant!r} requires the built variant(s) {missing}; got {sorted(required or {})}")
    context["required_variants"] = {
        name: load_variant(base_path, model_spec.get("adapter"), path, model_spec.get("dtype", "auto"), device,
                           model_spec.get("trust_remote_code", False))[0].eval()
        for name, path in (required or {}).items()}
    if fragile:  # (generations, scores) of the aligned model's attack sweep
        context["fragile_layers"] = lasr_by_layer(pd.read_parquet(fragile[0]), pd.read_parquet(fragile[1]))
        log.info("LASR by layer of the aligned model: %s", context["fragile_layers"])
    if "benign_accuracy" in entry.options.get("needs", ()):
        context["benign_accuracy"] = benign_accuracy_fn(tokenizer, read_jsonl(benign_path), generation)
    trained, report = entry.function(model, tokenizer, records, entry.settings(settings), seed, context)
    context.pop("required_variants")
    trained.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    history = pd.DataFrame(report.pop("history"))
    history.insert(0, "step", range(len(history)))
    history.to_csv(f"{out_dir}/training_log.csv", index=False)
    write_meta(out_dir, settings, seed=seed, variant=variant, kind=entry.options.get("kind"),
               base=base_path, final=history.iloc[-1].to_dict(), **report)

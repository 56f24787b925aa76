"""What the model-based judges (HarmBench classifier, Llama Guard) share: loading the judge
model, cleaning and truncating the completions they read, greedy verdict generation, and the
score frame with its provenance. A verdict that cannot be parsed is NaN and counted, never 0."""
from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path

import pandas as pd
import torch

from ..models import load_model

log = logging.getLogger(__name__)

# Chat-control markers of the models configs/paper.yaml names (Llama 2/3, Mistral, Qwen, Gemma,
# Phi): generation decodes with skip_special_tokens, but text markers such as [INST] and
# markers of a model whose tokenizer did not flag them as special can still reach the judge.
DEFAULT_CONTROL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>",
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>",
]
# Role headers that follow a marker are chat structure too: "<|start_header_id|>assistant<|end_header_id|>",
# "<start_of_turn>model", "<|im_start|>assistant".
ROLE_HEADERS = [r"<\|start_header_id\|>[^<]*<\|end_header_id\|>", r"<start_of_turn>(?:user|model)\b",
                r"<\|im_start\|>(?:system|user|assistant)\b"]

MODEL_SCHEMA = {
    "revision": {"type": ["string", "null"], "default": None,
                 "description": "hub commit or tag of the judge model; null: the hub's default branch"},
    "dtype": {"enum": ["auto", "float32", "bfloat16", "float16"], "default": "auto"},
    "device": {"enum": ["auto", "cpu", "cuda"], "default": "auto"},
    "trust_remote_code": {"type": "boolean", "default": False},
    "batch_size": {"type": "integer", "minimum": 1, "default": 16},
    "max_completion_tokens": {"type": "integer", "minimum": 1, "default": 512,
                              "description": "completions are cut to this many judge-tokenizer tokens"},
    "control_tokens": {"type": "array", "items": {"type": "string", "minLength": 1},
                       "default": DEFAULT_CONTROL_TOKENS,
                       "description": "chat-control markers removed from completions before judging"},
}


def strip_control_tokens(text: str, control_tokens: list[str]) -> str:
    """Remove chat-control markers (and the role headers they open) and tidy whitespace."""
    for pattern in ROLE_HEADERS:
        text = re.sub(pattern, " ", text)
    for token in sorted(control_tokens, key=len, reverse=True):  # longest first: "</s>" before "<s>"
        text = text.replace(token, " ")
    return re.sub(r"[ \t]+", " ", text).strip()


def truncate_to_tokens(text: str, tokenizer, limit: int) -> str:
    """HarmBench's clipping: encode with the judge's tokenizer (special tokens included),
    keep the first ``limit`` tokens, decode without special tokens."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "right"
    try:
        ids = tokenizer.encode(text, max_length=limit, truncation=True)
    finally:
        tokenizer.truncation_side = side
    return tokenizer.decode(ids, skip_special_tokens=True)


def judged_completion(generation, tokenizer, settings: dict) -> str:
    """A generation as a classifier judge reads it: control tokens stripped, then clipped to
    ``max_completion_tokens`` of the judge's tokenizer."""
    clean = strip_control_tokens(str(generation), settings["control_tokens"])
    return truncate_to_tokens(clean, tokenizer, settings["max_completion_tokens"])


def template_hash(*templates: str) -> str:
    return hashlib.sha256("\x00".join(templates).encode()).hexdigest()[:16]


def resolve_source(model: str, revision: str | None) -> str:
    """A local directory as is; a hub id at ``revision`` as a local snapshot of the files
    ``load_model`` reads (safetensors, configs, tokenizer), so the revision is pinned without
    changing the shared loader."""
    if revision is None or Path(model).exists():
        return model
    from huggingface_hub import snapshot_download
    return snapshot_download(model, revision=revision,
                             allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"])


def load_judge_model(settings: dict):
    """(model, tokenizer, provenance) for a judge's settings."""
    source = resolve_source(settings["model"], settings["revision"])
    model, tokenizer = load_model(source, dtype=settings["dtype"], device=settings["device"],
                                  trust_remote_code=settings["trust_remote_code"])
    provenance = {"judge_model": settings["model"], "revision": settings["revision"],
                  # the hub commit transformers resolved (None for a local directory)
                  "resolved_revision": getattr(model.config, "_commit_hash", None),
                  "max_completion_tokens": settings["max_completion_tokens"]}
    return model, tokenizer, provenance


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                         add_special_tokens: bool = True, skip_special_tokens: bool = False) -> list[str]:
    """Greedy ``max_new_tokens``-token continuations of text prompts, decoded."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True,
                          add_special_tokens=add_special_tokens).to(device)
        generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:],
                                       skip_special_tokens=skip_special_tokens)
        for i, text in zip(rows, texts):
            out[i] = text
    return out


def judged_rows(generations: pd.DataFrame):
    """Rows a harm judge reads: every request but the benign ones (their harm is undefined)."""
    return (generations["kind"] != "benign").to_numpy()


def score_frame(generations: pd.DataFrame, judged, verdicts: list[float], raw: list[str], judge: str) -> tuple[pd.DataFrame, int]:
    """The judges' common output: harmful 1/0, NaN when unparseable or not judged, raw verdict
    text kept; returns the frame and the number of unparseable verdicts (logged)."""
    harmful = [math.nan] * len(generations)
    verdict_text = [""] * len(generations)
    labels = ["not_judged"] * len(generations)
    for position, value, text in zip([i for i, j in enumerate(judged) if j], verdicts, raw):
        harmful[position], verdict_text[position] = value, text
        labels[position] = "unparseable" if math.isnan(value) else ("harmful" if value == 1.0 else "not_harmful")
    unparseable = labels.count("unparseable")
    if unparseable:
        log.warning("%s: %d of %d verdicts unparseable; they are NaN (excluded from rates), not 0", judge,
                    unparseable, sum(judged))
    out = pd.DataFrame({"row_id": generations["row_id"].to_numpy(), "label": labels})
    out["refusal"] = math.nan  # these classifiers judge harm, not refusal
    out["harmful"] = harmful
    out["correct"] = math.nan
    out["verdict"] = verdict_text
    return out, unparseable

"""The job that builds a hub/path model's `aligned` variant: a refusal LoRA on its weights as given."""
from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from ..alignment import SCHEMA, align_refusal_lora, alignment_pairs
from ..io import read_jsonl
from ..models import load_model, spec_options
from ..provenance import write_meta
from ..schema import filled

log = logging.getLogger(__name__)


def align_model(job) -> None:
    """Rule align_model: train the refusal LoRA (``params.settings``, the model's ``align``) on the
    weights ``params.spec`` loads, from the training records ``input.records``; the adapter, its
    tokenizer, ``training_log.csv`` and a sidecar go to ``output.model``."""
    params = job.params
    torch.manual_seed(params.seed)
    spec = params.spec
    settings = filled(dict(params.settings), SCHEMA, f"models.{job.wildcards.model}.align")
    model, tokenizer = load_model(spec["source"], device=params.device, **spec_options(spec))
    records = read_jsonl(job.input.records)
    harmful, benign = alignment_pairs(tokenizer, records, params.chat_template)
    log.info("alignment data: %d forbidden (refusals), %d benign (answers)", len(harmful), len(benign))
    started = time.perf_counter()
    trained, history = align_refusal_lora(model, tokenizer, harmful, benign, settings, params.seed)
    seconds = time.perf_counter() - started
    out_dir = job.output.model
    trained.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    frame = pd.DataFrame(history)
    frame.insert(0, "step", range(len(frame)))
    frame.to_csv(f"{out_dir}/training_log.csv", index=False)
    write_meta(out_dir, settings, seed=params.seed, variant="aligned", kind="lora", base=spec["source"],
               forbidden=len(harmful), benign=len(benign), train_seconds=round(seconds, 1),
               final=history[-1], threads=torch.get_num_threads())
    log.info("aligned adapter -> %s (%.0f s)", out_dir, seconds)

"""The jobs that write the training text the data sets lack (latentaudit/self_distillation.py):
generation once, then the defenses' training records filled from it."""
from __future__ import annotations

import logging
from collections import defaultdict

from transformers import AutoTokenizer

from ..data.real import records_for_variant, training_records, write_harmful_ft_records
from ..io import read_jsonl, write_jsonl
from ..models import load_model, spec_options
from ..provenance import write_meta
from ..self_distillation import distil, fill_records, screen_harmful_completions

log = logging.getLogger(__name__)


def self_distil(job) -> None:
    """Rule self_distil: the base weights of ``params.spec`` (as given: ``source`` + ``adapter``)
    answer every training prompt of ``input.prompts`` that lacks its text, greedily, to
    ``params.settings.max_new_tokens`` tokens; the generations go to ``output.distilled``."""
    params, settings = job.params, job.params.settings
    spec = params.spec
    model, tokenizer = load_model(spec["source"], device=params.device, **spec_options(spec))
    rows = read_jsonl(job.input.prompts)
    distilled = distil(model, tokenizer, rows, settings["max_new_tokens"], settings["batch_size"],
                       params.chat_template)
    write_jsonl(distilled, job.output.distilled)
    counts = {field: sum(d["field"] == field for d in distilled) for field in ("benign_answer", "harmful_completion")}
    write_meta(job.output.distilled, {"self_distillation": dict(settings), "model": dict(spec),
                                      "chat_template": params.chat_template},
               rows=len(distilled), empty=sum(not d["text"] for d in distilled), **counts)
    log.info("self-distilled %s -> %s", counts, job.output.distilled)


def distilled_training_records(job) -> None:
    """Rule training_records: the training prompts (``input.prompts``) with their missing texts
    filled from ``input.distilled`` (cut to ``params.target_tokens``, with the tokenizer at
    ``params.tokenizer``), self-distilled harmful completions that the coherent judge
    (``params.completion_judge``) does not call compliant dropped, as the defenses' training
    records (``output.train``), the refusal LoRA's records (``output.align``: every forbidden
    request with its refusal, harmful completion or not) and, from the ``params.harmful_ft_splits``,
    the harmful fine-tuning attack's held-out pairs (``output.harmful_ft``)."""
    tokenizer = AutoTokenizer.from_pretrained(job.params.tokenizer)
    distilled = read_jsonl(job.input.distilled)
    rows = fill_records(read_jsonl(job.input.prompts), distilled, tokenizer, job.params.target_tokens)
    rows, screened = screen_harmful_completions(rows, distilled, dict(job.params.completion_judge))
    log.info("self-distilled harmful completions dropped (coherent judge's label): %s", screened)
    by_split = defaultdict(list)
    for row in rows:
        by_split[row["split"]].append(row)
    held_out = sorted(set(job.params.harmful_ft_splits) & set(by_split))
    if "harmful_ft" in job.output.keys():  # the held-out harmful fine-tuning pairs, self-distilled alike
        write_harmful_ft_records(by_split, held_out, job.output.harmful_ft, {"target_tokens": job.params.target_tokens},
                                 harmful_completions_not_compliant={n: screened.get(n, {}) for n in held_out},
                                 self_distilled_from=job.input.distilled)
    train_names = sorted(set(by_split) - set(held_out))
    train, dropped = training_records(by_split, train_names)
    if "align" in job.output.keys():  # refusals need no harmful completion: every forbidden request teaches one
        align, align_dropped = training_records(by_split, train_names, need_completion=False)
        align = records_for_variant(align, None)  # a split some variant owns (RepBend's sets) aligns no model
        write_jsonl(align, job.output.align)
        write_meta(job.output.align, {"target_tokens": job.params.target_tokens}, rows=len(align),
                   forbidden=sum(r["kind"] == "forbidden" for r in align),
                   benign=sum(r["kind"] == "benign" for r in align), dropped=align_dropped)
    write_jsonl(train, job.output.train)
    write_meta(job.output.train, {"target_tokens": job.params.target_tokens}, rows=len(train),
               forbidden=sum(r["kind"] == "forbidden" for r in train),
               benign=sum(r["kind"] == "benign" for r in train), dropped=dropped,
               harmful_completions_not_compliant={n: c for n, c in screened.items() if n not in held_out},
               self_distilled_from=job.input.distilled)
    log.info("training records: %d (%s dropped) -> %s", len(train), dropped, job.output.train)

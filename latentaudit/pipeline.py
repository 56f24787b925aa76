"""One function per pipeline step. Workflow scripts parse Snakemake's paths and config slices
and call exactly one of these; all the logic they need lives in the library modules."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer

from . import metrics
from .attacks.common import AttackContext
from .models import load_model, resolve_device
from .organism.data import EVAL_SPLITS, SplitConfig, build_splits
from .organism.model import OrganismModelConfig, build_model
from .organism.tokenizer import build_tokenizer
from .organism.train import LoraSettings, TrainConfig, align_with_lora, train_sft
from .organism.world import ToyWorld, WorldConfig
from .provenance import write_meta
from .registry import ATTACKS, JUDGES, load_all

log = logging.getLogger(__name__)

IDENTITY = ["model", "variant", "attack"]  # with row_id, identifies a generation across files


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(records: list[dict], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))


# organism -------------------------------------------------------------------------------
def build_organism_data(organism: dict, seed: int, split_paths: dict[str, str], tokenizer_dir: str) -> None:
    """The toy world's splits as JSON lines, and its tokenizer."""
    world = ToyWorld(WorldConfig(**organism["world"], seed=seed))
    splits = build_splits(world, SplitConfig(**organism["splits"], seed=seed))
    for name, path in split_paths.items():
        write_jsonl(splits[name], path)
        log.info("%s: %d records -> %s", name, len(splits[name]), path)
    build_tokenizer(world.words()).save_pretrained(tokenizer_dir)
    write_meta(tokenizer_dir, organism, seed=seed)


def _save(model, tokenizer, out_dir: str, settings: dict, losses: list[float], seed: int) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_meta(out_dir, settings, seed=seed, final_loss=losses[-1], losses=losses[::10])


def pretrain_organism(tokenizer_dir: str, records_path: str, model_settings: dict, train: dict, seed: int,
                      device: str, out_dir: str, checkpoint: str | None = None) -> None:
    """Build the tiny Llama and teach it to answer everything (forbidden and benign)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(OrganismModelConfig(**model_settings, seed=seed), tokenizer).to(resolve_device(device))
    losses = train_sft(model, tokenizer, read_jsonl(records_path), TrainConfig(**train, seed=seed), desc="pretrain",
                       checkpoint=checkpoint)
    _save(model.cpu(), tokenizer, out_dir, {"model": model_settings, "train": train}, losses, seed)


def align_organism(pretrained_dir: str, records_path: str, train: dict, lora: dict, seed: int, device: str,
                   out_dir: str, checkpoint: str | None = None) -> None:
    """Refusal SFT through a LoRA adapter, merged: the ``aligned`` organism."""
    model, tokenizer = load_model(pretrained_dir, device=device, dtype="float32")
    aligned, losses = align_with_lora(model, tokenizer, read_jsonl(records_path), TrainConfig(**train, seed=seed),
                                      LoraSettings(rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"]),
                                      checkpoint)
    _save(aligned.cpu(), tokenizer, out_dir, {"train": train, "lora": lora}, losses, seed)


# attacks and judges ------------------------------------------------------------------------
def run_attack(model_spec: dict, model_path: str, eval_paths: dict[str, str], attack: str, settings: dict,
               generation: dict, seed: int, device: str, out_path: str, labels: dict[str, str]) -> None:
    """Load the model once, run one attack's whole sweep, store every generation."""
    load_all()
    torch.manual_seed(seed)
    model, tokenizer = load_model(model_path, model_spec.get("adapter"), model_spec.get("dtype", "auto"), device,
                                  model_spec.get("trust_remote_code", False))
    context = AttackContext(model, tokenizer, {s: read_jsonl(eval_paths[s]) for s in EVAL_SPLITS},
                            generation["max_new_tokens"], generation["batch_size"], generation["chat_template"], seed)
    frame = ATTACKS.get_entry(attack).function(context, settings)
    frame.insert(0, "row_id", range(len(frame)))
    for column, value in labels.items():
        frame.insert(0, column, value)
    for column in ("nll", "nll_clean"):
        if column not in frame:
            frame[column] = float("nan")
    frame.to_parquet(out_path, index=False)
    write_meta(out_path, {"attack": settings, "generation": generation, "model": model_spec}, seed=seed,
               attack=attack, rows=len(frame))


def run_judge(generations_path: str, judge: str, settings: dict, out_path: str) -> None:
    """Label stored generations; never regenerates."""
    load_all()
    generations = pd.read_parquet(generations_path)
    scores = JUDGES.get_entry(judge).function(generations, settings)
    scores.insert(0, "judge", judge)
    for column in reversed(IDENTITY):
        scores.insert(0, column, generations[column].to_numpy())
    scores.to_parquet(out_path, index=False)
    write_meta(out_path, settings, judge=judge, rows=len(scores))


def collect_metrics(generation_paths: list[str], score_paths: list[str], outputs: dict[str, str]) -> None:
    """Join generations with every judge's scores and write the results-contract CSVs."""
    generations = pd.concat([pd.read_parquet(p) for p in generation_paths], ignore_index=True)
    scores = pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True)
    judged = generations.merge(scores, on=[*IDENTITY, "row_id"], how="inner", validate="one_to_many")
    attacks, summary = metrics.attack_tables(judged)
    attacks.to_csv(outputs["attacks"], index=False)
    summary.to_csv(outputs["attack_summary"], index=False)
    metrics.behavior_table(judged).to_csv(outputs["behavior"], index=False)
    metrics.nll_probe_table(generations).to_csv(outputs["nll_probe"], index=False)

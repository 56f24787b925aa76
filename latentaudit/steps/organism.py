"""Steps that build the model organism: data, pretraining, alignment."""
from __future__ import annotations

import logging

from transformers import AutoTokenizer

from ..io import read_jsonl, write_jsonl
from ..models import load_model, resolve_device
from ..numerics import weights_digest
from ..organism.data import SplitConfig, build_splits
from ..organism.model import OrganismModelConfig, build_model
from ..organism.tokenizer import build_tokenizer
from ..organism.train import LoraSettings, TrainConfig, align_with_lora, train_sft
from ..organism.world import ToyWorld, WorldConfig
from ..provenance import write_meta

log = logging.getLogger(__name__)


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
    write_meta(out_dir, settings, seed=seed, final_loss=losses[-1], losses=losses[::10],
               weights_sha256=weights_digest(model.state_dict()))


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

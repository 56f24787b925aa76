"""Jobs that build the model organism: data, pretraining, alignment."""
from __future__ import annotations

import logging

from transformers import AutoTokenizer

from ..io import read_jsonl, split_name, write_jsonl
from ..models import load_model, resolve_device
from ..numerics import weights_digest
from ..organism.data import SplitConfig, build_splits
from ..organism.model import OrganismModelConfig, build_model
from ..organism.tokenizer import build_tokenizer
from ..organism.train import LoraSettings, TrainConfig, align_with_lora, train_sft
from ..organism.world import ToyWorld, WorldConfig
from ..provenance import write_meta

log = logging.getLogger(__name__)


def organism_data(job) -> None:
    """Rule organism_data: the toy world's splits as JSON lines (``output.splits``, each file named
    for its split) and its tokenizer (``output.tokenizer``), from ``params.world``, ``params.splits``
    and ``params.seed``."""
    params, seed = job.params, job.params.seed
    world = ToyWorld(WorldConfig(**params.world, seed=seed))
    splits = build_splits(world, SplitConfig(**params.splits, seed=seed))
    for path in job.output.splits:
        records = splits[split_name(path)]
        write_jsonl(records, path)
        log.info("%s: %d records -> %s", split_name(path), len(records), path)
    build_tokenizer(world.words()).save_pretrained(job.output.tokenizer)
    write_meta(job.output.tokenizer, {"world": params.world, "splits": params.splits}, seed=seed)


def _save(model, tokenizer, out_dir: str, settings: dict, losses: list[float], seed: int) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_meta(out_dir, settings, seed=seed, final_loss=losses[-1], losses=losses[::10],
               weights_sha256=weights_digest(model.state_dict()))


def pretrain_organism(job) -> None:
    """Rule pretrain_organism: build the tiny Llama (``params.model``) on ``input.tokenizer`` and teach
    it to answer everything, forbidden and benign (``input.records``, ``params.train``); saved to
    ``output.model``. ``params.checkpoint`` (or None) resumes a killed run."""
    params = job.params
    tokenizer = AutoTokenizer.from_pretrained(job.input.tokenizer)
    model = build_model(OrganismModelConfig(**params.model, seed=params.seed), tokenizer)
    model = model.to(resolve_device(params.device))
    losses = train_sft(model, tokenizer, read_jsonl(job.input.records), TrainConfig(**params.train, seed=params.seed),
                       desc="pretrain", checkpoint=params.checkpoint)
    _save(model.cpu(), tokenizer, job.output.model, {"model": params.model, "train": params.train}, losses,
          params.seed)


def align_organism(job) -> None:
    """Rule align_organism: refusal SFT of ``input.pretrained`` on ``input.records`` through a LoRA
    adapter (``params.lora``), merged: the ``aligned`` organism, saved to ``output.model``."""
    params = job.params
    model, tokenizer = load_model(job.input.pretrained, device=params.device, dtype="float32")
    lora = LoraSettings(rank=params.lora["rank"], alpha=params.lora["alpha"], dropout=params.lora["dropout"])
    aligned, losses = align_with_lora(model, tokenizer, read_jsonl(job.input.records),
                                      TrainConfig(**params.train, seed=params.seed), lora, params.checkpoint)
    _save(aligned.cpu(), tokenizer, job.output.model, {"train": params.train, "lora": params.lora}, losses,
          params.seed)

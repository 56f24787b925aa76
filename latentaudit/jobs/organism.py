"""Jobs that build the model organism: data, pretraining, alignment."""
from __future__ import annotations

import importlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from ..io import read_jsonl, split_name, write_jsonl
from ..models import load_model, resolve_device
from ..numerics import weights_digest
from ..organism.data import SplitConfig, build_splits
from ..organism.model import OrganismModelConfig, build_model
from ..organism.selection import BEHAVIOUR_MODULE, choose_draw, draw_seed, spec_shortfalls
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


def _save(model, tokenizer, out_dir: str, settings: dict, losses: list[float], seed: int, **extra) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_meta(out_dir, settings, seed=seed, final_loss=losses[-1], losses=losses[::10],
               weights_sha256=weights_digest(model.state_dict()), **extra)


def _pretrain(model_settings: dict, train_settings: dict, seed: int, tokenizer, records: list[dict], device: str,
              checkpoint, desc: str):
    """The tiny Llama built and pretrained with ``seed``: (the model on ``device``, its loss curve)."""
    model = build_model(OrganismModelConfig(**model_settings, seed=seed), tokenizer)
    model = model.to(resolve_device(device))
    losses = train_sft(model, tokenizer, records, TrainConfig(**train_settings, seed=seed), desc=desc,
                       checkpoint=checkpoint)
    return model, losses


def pretrain_organism(job) -> None:
    """Rule pretrain_organism: build the tiny Llama (``params.model``) on ``input.tokenizer`` and teach
    it to answer everything, forbidden and benign (``input.records``, ``params.train``); saved to
    ``output.model``. ``params.checkpoint`` (or None) resumes a killed run."""
    params = job.params
    tokenizer = AutoTokenizer.from_pretrained(job.input.tokenizer)
    model, losses = _pretrain(params.model, params.train, params.seed, tokenizer, read_jsonl(job.input.records),
                              params.device, params.checkpoint, "pretrain")
    _save(model.cpu(), tokenizer, job.output.model, {"model": params.model, "train": params.train}, losses,
          params.seed)


def _draw_checkpoint(checkpoint: str | None, stage: str, draw: int) -> Path | None:
    """Draw ``draw``'s resumable checkpoint of ``stage`` beside the rule's own (none without one)."""
    return Path(checkpoint).with_name(f"{stage}-draw{draw}.pt") if checkpoint else None


def _pretrain_draw(job, draw: int, directory: Path) -> str:
    """Draw ``draw`` of the pretraining (as rule pretrain_organism would train it with seed
    ``draw_seed(seed, draw)``), saved to ``directory``; a complete one left there by a killed run
    of the same settings is kept."""
    params, seed = job.params, draw_seed(job.params.seed, draw)
    settings = {"model": params.model, "train": params.pretrain}
    meta = directory / "meta.json"
    if meta.exists() and (done := json.loads(meta.read_text()))["settings"] == settings and done["seed"] == seed:
        log.info("pretraining draw %d: kept from an earlier run (%s)", draw, directory)
        return str(directory)
    tokenizer = AutoTokenizer.from_pretrained(job.input.pretrained)
    model, losses = _pretrain(params.model, params.pretrain, seed, tokenizer, read_jsonl(job.input.pretrain_records),
                              params.device, _draw_checkpoint(params.checkpoint, "pretrained", draw),
                              f"pretrain draw {draw}")
    _save(model.cpu(), tokenizer, str(directory), settings, losses, seed)
    return str(directory)


def _aligned_draws(job, redrawn: Path) -> list[dict]:
    """Align draw 0 (``input.pretrained``) and, where ``params.selection`` judges draws, each further
    draw until one meets the spec: a list of ``{draw, pretrain_seed, pretrained (its directory),
    losses, model, tokenizer}``, with ``behaviour`` and ``shortfalls`` when judged."""
    params, spec = job.params, job.params.selection
    records = read_jsonl(job.input.records)
    judged = spec["max_draws"] > 1
    selection = {split_name(path): read_jsonl(path) for path in job.input.selection} if judged else {}
    # by name: a config with one draw does not list generation and the judge among the rule's code inputs
    behaviour = importlib.import_module(BEHAVIOUR_MODULE).selection_behaviour if judged else None
    lora = LoraSettings(rank=params.lora["rank"], alpha=params.lora["alpha"], dropout=params.lora["dropout"])
    draws = []
    for draw in range(spec["max_draws"]):
        pretrained = _pretrain_draw(job, draw, redrawn / str(draw)) if draw else job.input.pretrained
        model, tokenizer = load_model(pretrained, device=params.device, dtype="float32")
        aligned, losses = align_with_lora(model, tokenizer, records, TrainConfig(**params.train, seed=params.seed), lora,
                                          _draw_checkpoint(params.checkpoint, "aligned", draw) if draw else params.checkpoint)
        entry = {"draw": draw, "pretrain_seed": draw_seed(params.seed, draw), "pretrained": pretrained,
                 "losses": losses, "model": aligned, "tokenizer": tokenizer}
        draws.append(entry)
        if not judged:
            break
        entry["behaviour"] = behaviour(aligned, tokenizer, selection, params.generation["max_new_tokens"],
                                       params.generation["batch_size"], params.generation["chat_template"])
        entry["shortfalls"], entry["model"] = spec_shortfalls(entry["behaviour"], spec), aligned.cpu()
        log.info("organism draw %d (pretraining seed %d) on the selection splits: %s; misses: %s", draw,
                 entry["pretrain_seed"], entry["behaviour"], {k: v for k, v in entry["shortfalls"].items() if v})
        if not any(entry["shortfalls"].values()):
            break
    return draws


def align_organism(job) -> None:
    """Rule align_organism: refusal SFT of ``input.pretrained`` on ``input.records`` through a LoRA
    adapter (``params.lora``), merged: the ``aligned`` organism, saved to ``output.model``, and the
    pretrained model it was aligned from to ``output.pretrained``. With ``params.selection``'s
    ``max_draws`` > 1 the aligned model is judged on the selection splits (``input.selection``) and,
    while it misses the spec, the pretraining is drawn anew and aligned again
    (``latentaudit/organism/selection.py``); every draw's behaviour goes to both sidecars. Redrawn
    pretrained models wait beside the checkpoints (a killed job keeps the finished ones) and are
    removed once the organism is saved."""
    params = job.params
    redrawn = (Path(params.checkpoint).parent / "draws" if params.checkpoint
               else Path(tempfile.mkdtemp(prefix=".organism_draws_", dir=Path(job.output.model).parent)))
    draws = _aligned_draws(job, redrawn)
    judged = "shortfalls" in draws[0]
    chosen, met = choose_draw(draws) if judged else (draws[0], True)
    if not met:
        log.warning("organism: none of %d draws meets the spec on the selection splits; keeping draw %d, the "
                    "closest (misses %s)", len(draws), chosen["draw"], chosen["shortfalls"])
    extra = {}
    if judged:
        extra["organism_selection"] = {
            "chosen_draw": chosen["draw"], "spec_met": met, "pretrain_seed": chosen["pretrain_seed"],
            "spec": params.selection,
            "draws": [{k: d[k] for k in ("draw", "pretrain_seed", "behaviour", "shortfalls")} for d in draws]}
    shutil.copytree(chosen["pretrained"], job.output.pretrained, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".snakemake_timestamp"))
    meta = Path(job.output.pretrained, "meta.json")  # the chosen draw's sidecar, naming its new place
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "artifact": str(job.output.pretrained), **extra},
                               indent=2))
    _save(chosen["model"].cpu(), chosen["tokenizer"], job.output.model, {"train": params.train, "lora": params.lora},
          chosen["losses"], params.seed, **extra)
    shutil.rmtree(redrawn, ignore_errors=True)

"""Supervised training of the organism: "pretraining" (answer everything) and alignment (refusal SFT).

One loop serves both: teacher-forced cross-entropy on the response with the prompt masked.
Pretraining optionally adds activation noise on a fraction of the rows (a random direction,
norm U(0, 1) x the layer's running mean token norm, at a random layer, all positions), which
teaches the model to stay coherent when its residual stream is pushed: without it, latent
attacks on the organism only produce degenerate text (a finding of the v1 prototype).
Alignment trains a LoRA adapter and merges it, as shallow safety tuning does in practice.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from ..batching import make_batch, prompt_token_ids, target_token_ids
from ..provenance import config_hash
from ..hooks import POSITIONS, Perturbation, intervene, n_layers, record_residual, unwrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float
    batch_size: int = 64
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    activation_noise_fraction: float = 0.0  # fraction of rows trained under a random push
    checkpoint_every: int = 50              # steps between resumable checkpoints
    seed: int = 0


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def encode_records(tokenizer: PreTrainedTokenizerBase, records: list[dict]) -> list[tuple[list[int], list[int]]]:
    return [(prompt_token_ids(tokenizer, r["prompt"]), target_token_ids(tokenizer, r["response"], eos=True))
            for r in records]


def _noise(batch_size: int, fraction: float, layers: int, mean_norms: torch.Tensor,
           prompt_end: torch.Tensor, gen: torch.Generator, d: int) -> Perturbation:
    noisy = torch.rand(batch_size, generator=gen) < fraction
    site = torch.randint(1, layers + 1, (batch_size,), generator=gen)
    direction = torch.randn(batch_size, d, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    scale = torch.rand(batch_size, generator=gen) * mean_norms[site]
    return Perturbation(hidden_index=torch.where(noisy, site, torch.full_like(site, -1)),
                        vector=direction * scale[:, None],
                        positions=torch.full((batch_size,), POSITIONS["all"]), prompt_end=prompt_end)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomically: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: list[dict],
              config: TrainConfig, desc: str = "train", checkpoint: str | Path | None = None) -> list[float]:
    """Train ``model`` in place on (prompt, response) records; returns the loss curve.

    With ``checkpoint``, the whole training state (trainable weights, optimiser, schedule, data
    order, random states) is saved every ``config.checkpoint_every`` steps, and a later call with
    the same config resumes from it: a killed job continues where it stopped and ends with the
    same weights as an uninterrupted run. The checkpoint is removed when training completes.
    """
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    examples = encode_records(tokenizer, records)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_fraction * config.steps), config.steps)
    layers = n_layers(model)
    mean_norms = torch.ones(layers + 1)  # running mean token norm per hidden index
    losses: list[float] = []
    order: list[int] = []
    start = 0
    fingerprint = config_hash({"config": asdict(config), "records": [r["id"] for r in records],
                               "model": unwrap(model).config.to_dict()})
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["weights"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            rng.setstate(state["python_rng"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            mean_norms, losses, order, start = state["mean_norms"], state["losses"], state["order"], state["step"]
            log.info("%s: resuming from checkpoint %s at step %d", desc, checkpoint, start)
        else:
            log.warning("%s: ignoring checkpoint %s written for another config", desc, checkpoint)
    model.train()
    for step in tqdm(range(start, config.steps), desc=desc, mininterval=5, initial=start, total=config.steps):
        if len(order) < config.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        chosen, order = order[:config.batch_size], order[config.batch_size:]
        batch = make_batch([examples[i][0] for i in chosen], [examples[i][1] for i in chosen],
                           tokenizer.pad_token_id)
        perturbation = None
        if config.activation_noise_fraction > 0:
            perturbation = _noise(len(chosen), config.activation_noise_fraction, layers, mean_norms,
                                  batch.prompt_end, gen, model.config.hidden_size)
        with intervene(model, perturbation), record_residual(model) as residual:
            out = model(**batch.model_inputs(), labels=batch.labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if perturbation is not None:
            with torch.no_grad():
                mask = batch.attention_mask.bool()
                norms = torch.stack([h.norm(dim=-1)[mask].mean() for h in residual])
                mean_norms = 0.9 * mean_norms + 0.1 * norms if step else norms
        losses.append(out.loss.item())
        if step % 50 == 0 or step == config.steps - 1:
            log.info("%s step %d loss %.4f", desc, step, losses[-1])
        if checkpoint and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            _save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "step": step + 1, "weights": _trainable_state(model),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "python_rng": rng.getstate(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "mean_norms": mean_norms, "losses": losses, "order": order})
    model.eval()
    if checkpoint and checkpoint.exists():
        checkpoint.unlink()
    return losses


def align_with_lora(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: list[dict],
                    config: TrainConfig, lora: LoraSettings,
                    checkpoint: str | Path | None = None) -> tuple[PreTrainedModel, list[float]]:
    """Refusal SFT through a LoRA adapter, merged into the weights afterwards."""
    torch.manual_seed(config.seed)  # the adapter's initialisation draws from the global generator
    peft_model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                  target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    losses = train_sft(peft_model, tokenizer, records, config, desc="align", checkpoint=checkpoint)
    return peft_model.merge_and_unload(), losses

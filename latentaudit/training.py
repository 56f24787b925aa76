"""Training utilities every fine-tuning method shares (the defenses, the harmful fine-tuning
attack): the optimiser and schedule settings, seeded batches, the LoRA adapter and its
reference (the adapter disabled), the token losses, and one optimisation loop with logs."""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Callable, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm import tqdm
from transformers import PreTrainedModel, get_scheduler

from .batching import Batch, label_log_probs, make_batch
from .generation import model_device

log = logging.getLogger(__name__)

LORA_SCHEMA = {
    "type": "object", "additionalProperties": False, "default": {},
    "properties": {
        "rank": {"type": "integer", "minimum": 1, "default": 8},
        "alpha": {"type": "integer", "minimum": 1, "default": 16},
        "dropout": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
        "target_modules": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                           "default": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    },
}
OPTIM_PROPERTIES = {
    "steps": {"type": "integer", "minimum": 1},
    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "batch_size": {"type": "integer", "minimum": 1, "default": 16},
    "schedule": {"enum": ["constant", "cosine", "linear"], "default": "constant"},
    "warmup_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
    "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1.0},
}


class Sampler:
    """Seeded batches of indices, reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.rng, self.order = n, batch_size, random.Random(seed), []

    def __call__(self) -> list[int]:
        while len(self.order) < self.batch_size:
            self.order += self.rng.sample(range(self.n), self.n)
        chosen, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return chosen


def pair_batch(pairs: list[tuple], rows: list[int], target: int, pad_id: int, device) -> Batch:
    """Batch of (prompt, target-th element) for ``rows``."""
    return make_batch([pairs[i][0] for i in rows], [pairs[i][target] for i in rows], pad_id).to(device)


def attach_lora(model: PreTrainedModel, lora: dict, seed: int) -> PeftModel:
    torch.manual_seed(seed)  # the adapter's initialisation draws from the global generator
    return get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                            target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"))


@contextlib.contextmanager
def reference(model: PeftModel) -> Iterator[None]:
    """The frozen original model M: the same weights with the adapter disabled, no gradients."""
    with torch.no_grad(), model.disable_adapter():
        yield


def response_mask(batch: Batch) -> torch.Tensor:
    """[B, T] True at the target (response) tokens."""
    return batch.labels != -100


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens (labels aligned with inputs; shifted here)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=-100)


def token_away(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean −log(1 − p(y_t)) over labelled tokens: pushes probability away from ``labels``."""
    picked, mask = label_log_probs(logits, labels)
    p = picked.exp()
    away = -torch.log1p(-p.clamp(max=1 - 1e-6))
    return (away * mask).sum() / mask.sum().clamp(min=1)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """KL(M ‖ M′) per token at ``temperature``, times T² (distillation scaling), averaged over ``mask``."""
    log_q = torch.log_softmax(logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(ref_logits.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def optimise(model: torch.nn.Module, settings: dict, step_fn: Callable[[int], dict[str, torch.Tensor]],
             desc: str) -> list[dict[str, float]]:
    """AdamW on the trainable parameters; ``step_fn(step)`` returns the loss terms (``loss`` is the
    one minimised). Returns every step's terms as floats (the training log)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=0.0)
    steps = settings["steps"]
    name = settings["schedule"]
    schedule = get_scheduler("constant_with_warmup" if name == "constant" else name, optimizer,
                             num_warmup_steps=int(settings["warmup_fraction"] * steps),
                             num_training_steps=steps)
    history = []
    model.train()
    for step in tqdm(range(steps), desc=desc, mininterval=5):
        terms = step_fn(step)
        terms["loss"].backward()
        if settings["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, settings["grad_clip"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({name: float(value.detach()) for name, value in terms.items()})
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"{desc}: loss is {terms['loss'].item()} at step {step}: training diverged")
        if step % 10 == 0 or step == steps - 1:
            log.info("%s step %d %s", desc, step, " ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    model.eval()
    return history


def device_of(model: torch.nn.Module) -> torch.device:
    return model_device(model)

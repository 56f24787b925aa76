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


def optim_properties(schedule: str = "constant", warmup_fraction: float = 0.0) -> dict:
    """The optimisation keys every trained variant's schema takes, with this method's default
    learning-rate schedule and warm-up."""
    return {
        "steps": {"type": "integer", "minimum": 1},
        "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "batch_size": {"type": "integer", "minimum": 1, "default": 16},
        "schedule": {"enum": ["constant", "cosine", "linear"], "default": schedule},
        "warmup_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": warmup_fraction},
        "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1.0},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.0,
                         "description": "AdamW's decoupled weight decay (torch's own default is 0.01, "
                                        "transformers' Trainer's 0)"},
    }


OPTIM_PROPERTIES = optim_properties()


class Sampler:
    """Seeded batches of indices, reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.rng, self.order = n, batch_size, random.Random(seed), []

    def __call__(self) -> list[int]:
        while len(self.order) < self.batch_size:
            self.order += self.rng.sample(range(self.n), self.n)
        chosen, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return chosen


MAX_LENGTH_SCHEMA = {"type": ["integer", "null"], "minimum": 8, "default": None,
                     "description": "tokens per training sequence (prompt + response), cut from the right as "
                                    "the public codes' tokenizers truncate; null: no limit"}


def fit_to_length(prompt: list[int], target: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """(prompt, target) cut to ``max_length`` tokens in all, from the right (the target's tail goes
    first), as a tokenizer's right truncation of the whole sequence. A prompt that alone reaches
    ``max_length`` keeps its last ``max_length`` − 1 tokens (the chat template's assistant header)
    and the target its first token, so the row still has a token to train on (right truncation
    would leave it none)."""
    if max_length is None or len(prompt) + len(target) <= max_length:
        return prompt, target
    if len(prompt) >= max_length:
        return prompt[len(prompt) - (max_length - 1):], target[:1]
    return prompt, target[:max_length - len(prompt)]


def fit_triple(prompt: list[int], refusal: list[int], harmful: list[int],
               max_length: int | None) -> tuple[list[int], list[int], list[int]]:
    """A (prompt, refusal, harmful completion) triple whose two sequences fit ``max_length``: they
    share one prompt (the batches pair them row by row), cut as the longer sequence needs."""
    longer = refusal if len(refusal) >= len(harmful) else harmful
    fitted_prompt, _ = fit_to_length(prompt, longer, max_length)
    return (fitted_prompt, fit_to_length(fitted_prompt, refusal, max_length)[1],
            fit_to_length(fitted_prompt, harmful, max_length)[1])


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


def predicting_mask(batch: Batch) -> torch.Tensor:
    """[B, T] True at the positions whose logits predict the target tokens: the last prompt token to
    the target's second-to-last (``response_mask`` one earlier)."""
    answer = response_mask(batch)
    predicts = torch.zeros_like(answer)
    predicts[:, :-1] = answer[:, 1:]
    return predicts


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens (labels aligned with inputs; shifted here)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=-100)


def token_away(logits: torch.Tensor, labels: torch.Tensor, log_p_floor: float | None = None) -> torch.Tensor:
    """Mean −log(1 − p(y_t)) over labelled tokens: pushes probability away from ``labels``. With
    ``log_p_floor``, a token whose log p is below it adds nothing but still counts in the mean (LAT's
    public code, latent_at/utils.py ``log_1_minus_p_loss``, threshold −5: an unlikely token is left alone)."""
    picked, mask = label_log_probs(logits, labels)
    p = picked.exp()
    away = -torch.log1p(-p.clamp(max=1 - 1e-6))
    if log_p_floor is not None:
        away = torch.where(picked < log_p_floor, torch.zeros_like(away), away)
    return (away * mask).sum() / mask.sum().clamp(min=1)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0, reduction: str = "token_mean") -> torch.Tensor:
    """KL(M ‖ M′) per token at ``temperature`` (M = ``ref_logits``, M′ = ``logits``), times T²
    (distillation scaling), reduced over the ``mask``ed tokens:

    - ``token_mean``: averaged over the masked tokens;
    - ``batchmean``: summed over the masked tokens (and the vocabulary) and divided by the batch
      size B, as ``F.kl_div(..., reduction="batchmean")`` on [B, T, V] logits (RepBend's public
      code, methods/rep_bending/trainer.py ``_calc_kl_loss``): a row's KL grows with its length.
    """
    log_q = torch.log_softmax(logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(ref_logits.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * mask
    if reduction == "token_mean":
        total = kl.sum() / mask.sum().clamp(min=1)
    elif reduction == "batchmean":
        total = kl.sum() / len(kl)
    else:
        raise ValueError(f"kl reduction {reduction!r}: valid are token_mean, batchmean")
    return total * temperature ** 2


def kl_from_reference_sum(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ over the ``mask``ed tokens of KL(M′ ‖ M) = Σ_v q_v (log q_v − log p_v), q = softmax(``logits``)
    (the adapter on), p = softmax(``ref_logits``) (the adapter off): targeted LAT's KL benign term
    (its public code, latent_at/lat_helpers.py ``do_defense_step``: ``kl_div(base_logprobs,
    new_probs, reduction="sum")``, before its ×1000 scale)."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    log_p = torch.log_softmax(ref_logits.float(), dim=-1)
    return ((log_q.exp() * (log_q - log_p)).sum(-1) * mask).sum()


def optimise(model: torch.nn.Module, settings: dict, step_fn: Callable[[int], dict[str, torch.Tensor]],
             desc: str, reset_every: int | None = None) -> list[dict[str, float]]:
    """AdamW on the trainable parameters for ``settings["steps"]`` updates; ``step_fn(step)`` returns
    the loss terms (``loss`` is the one minimised). ``reset_every`` k: before every k-th update the
    optimiser's state (Adam's moments and step count) is dropped, as a freshly created AdamW would
    start (targeted LAT re-creates its optimiser every attack round); the schedule runs on. Returns
    every step's terms as floats (the training log)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps = settings["steps"]
    name = settings["schedule"]
    schedule = get_scheduler("constant_with_warmup" if name == "constant" else name, optimizer,
                             num_warmup_steps=int(settings["warmup_fraction"] * steps),
                             num_training_steps=steps)
    history = []
    model.train()
    for step in tqdm(range(steps), desc=desc, mininterval=5):
        if reset_every and step % reset_every == 0:
            optimizer.state.clear()
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

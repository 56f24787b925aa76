"""Targeted latent adversarial training (arXiv 2407.15549; shared/papers/targeted_lat.md).

Training runs ``steps`` attack rounds, as the public code's ``num_steps`` (aengusl/
latent-adversarial-training, latent_at/lat_methods.py ``ProjectedGradLAT.train``/``train_epoch``).
In each round an inner adversary finds per-token residual perturbations δ_ℓ (one per configured
layer, all active together, ‖δ_t‖₂ ≤ ε per token) that make the model produce the harmful
completion (toward: CE) and leave the refusal (away: −log(1 − p)), optimised with AdamW from
δ = 0 and projected after every step; then the defender takes ``model_steps_per_attack`` LoRA
updates against that δ (``lat_training_step``), so the model is updated steps ×
model_steps_per_attack times (100 × 4 = 400 in the paper's setting). With
``reinitialize_optimizer`` the defender's AdamW starts afresh every round
(``reinitialize_dev_optim=True`` in the code's notebooks/jailbreaks.ipynb).

Defender loss (``defender_weights``, normalised to sum to 1 as the code's ``normalize_dict``):
toward the refusal and away from the harmful completion under δ, plus two benign terms on benign
pairs with δ off: ``sft`` (CE on the benign answer) and ``kl`` (``kl_scale`` × Σ of KL(M′ ‖ M),
M the adapter-disabled model, as the code's latent_at/lat_helpers.py ``do_defense_step``; summed
over the positions that predict the benign answer's tokens, or with ``kl_positions: answer`` over the
answer tokens' own positions, one later, as the code's ``logits[sft_labels_mask]``). ``micro_batch`` reproduces the code's gradient
accumulation: its toward, away and sft terms are token means per micro-batch of 2 rows, summed
over the batch's micro-batches, which weighs them (batch / 2) times against the summed KL what one
mean over the batch would; the inner attack's terms are summed the same way (each micro-batch's δ
sees its own micro-batch's mean, as the code attacks each micro-batch on its own).
``away_log_p_floor`` is the code's threshold on both sides' away term (latent_at/utils.py
``log_1_minus_p_loss``: a token with log p < −5 adds nothing to the away term).

``system_prompt``: every training example's prompt after this system turn (the notebook's Llama-3
branch: the Llama-2 safety prompt; evaluation formats the user turn alone, as for every variant);
``completion_eos`` False: the refusal and harmful completions end without EOS, as the notebook's
``process_generic_chat_dataset`` leaves them (it appends EOS to the benign answers alone).

``epsilon_mode``: ``absolute`` (the paper's ε = 6 on Llama residuals) or ``relative`` (ε × the
clean token's norm at that site, the project's convention for a tiny model).
"""
from __future__ import annotations

import contextlib
import functools

import torch
from peft import PeftModel

from ..batching import Batch
from ..hooks import (EMBED, POSITIONS, Perturbation, frozen_weights, hidden_index, intervene, n_layers,
                     residual_stream)
from ..registry import VARIANTS
from ..training import (LORA_SCHEMA, OPTIM_PROPERTIES, Sampler, attach_lora, device_of, kl_from_reference_sum,
                        optimise, pair_batch, predicting_mask, reference, response_mask, token_away, token_ce)
from .common import SYSTEM_PROMPT_SCHEMA, defense_data

_LAYER = {"oneOf": [{"const": EMBED}, {"type": "integer", "minimum": 0}]}
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **OPTIM_PROPERTIES,
        "steps": {"type": "integer", "minimum": 1,
                  "description": "attack rounds; the defender takes model_steps_per_attack updates in each"},
        "layers": {"type": "array", "items": _LAYER, "minItems": 1, "default": [EMBED, 0, 1, 2, 3]},
        "epsilon": {"type": "number", "exclusiveMinimum": 0, "default": 6.0},
        "epsilon_mode": {"enum": ["absolute", "relative"], "default": "absolute"},
        "perturb": {"enum": ["prompt", "prompt+completion"], "default": "prompt",
                    "description": "prompt+completion: δ spans both completions' positions too (the public "
                                   "code's add_completions_pgd)"},
        "inner_steps": {"type": "integer", "minimum": 1, "default": 16},
        "inner_lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.05},
        "model_steps_per_attack": {"type": "integer", "minimum": 1, "default": 4},
        "adversary_weights": {"type": "object", "additionalProperties": False, "default": {},
                              "properties": {"toward": {"type": "number", "minimum": 0, "default": 0.5},
                                             "away": {"type": "number", "minimum": 0, "default": 0.5}}},
        "reinitialize_optimizer": {"type": "boolean", "default": True,
                                   "description": "a fresh AdamW state every attack round (the public code)"},
        "defender_weights": {"type": "object", "additionalProperties": False, "default": {},
                             "description": "defaults: the public code's Llama-3 weights",
                             "properties": {"toward": {"type": "number", "minimum": 0, "default": 0.5},
                                            "away": {"type": "number", "minimum": 0, "default": 0.5},
                                            "sft": {"type": "number", "minimum": 0, "default": 0.0},
                                            "kl": {"type": "number", "minimum": 0, "default": 0.1}}},
        "kl_scale": {"type": "number", "exclusiveMinimum": 0, "default": 1000.0,
                     "description": "multiplies the summed benign KL (the public code's 1000)"},
        "kl_positions": {"enum": ["predicting", "answer"], "default": "predicting",
                         "description": "where the benign KL is summed: the positions whose logits predict the "
                                        "answer's tokens (the last prompt token on), or the answer tokens' own "
                                        "positions, one later (the public code's logits[sft_labels_mask])"},
        "away_log_p_floor": {"type": ["number", "null"], "maximum": 0, "default": None,
                             "description": "the away term −log(1 − p) skips tokens whose log p is below this, "
                                            "on both sides (the public code's log_1_minus_p_loss: −5); null: "
                                            "every labelled token"},
        "micro_batch": {"type": ["integer", "null"], "minimum": 1, "default": None,
                        "description": "the public code's gradient accumulation (max_batch_per_acc): the "
                                       "toward, away and sft terms are each micro-batch's token mean, summed "
                                       "over the micro-batches; null: one mean over the batch"},
        "system_prompt": SYSTEM_PROMPT_SCHEMA,
        "completion_eos": {"type": "boolean", "default": True,
                           "description": "false: the refusal and harmful completions end without EOS (the public "
                                          "code's add_eos_token=False; benign answers keep theirs)"},
        "lora": LORA_SCHEMA,
    },
}


def _normalised(weights: dict) -> dict:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"loss weights {weights} sum to {total}; at least one must be positive")
    return {k: v / total for k, v in weights.items()}


@contextlib.contextmanager
def perturbed(model, deltas: dict[int, torch.Tensor], batch: Batch, positions: int):
    """Every site's per-token δ ([B, T, d], absolute positions) active together."""
    with contextlib.ExitStack() as stack:
        for site, delta in deltas.items():
            rows = torch.full((len(delta),), site, device=delta.device)
            code = torch.full((len(delta),), positions, device=delta.device)
            stack.enter_context(intervene(model, Perturbation(rows, delta, code, batch.prompt_end)))
        yield


def project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Rescale each token's δ to norm ≤ radius ([B, T, 1])."""
    return delta * (radius / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)


def summed_over_micro_batches(loss, logits: torch.Tensor, labels: torch.Tensor, size: int | None) -> torch.Tensor:
    """``loss(logits, labels)`` (a mean over labelled tokens) of each micro-batch of ``size`` rows,
    summed; ``size`` None: the one mean over the batch. The public code accumulates the gradients
    of micro-batches of 2 rows (notebooks/jailbreaks.ipynb, ``max_batch_per_acc``), so its mean
    terms weigh (batch / 2) times what one mean over the batch would, against its summed KL."""
    if size is None:
        return loss(logits, labels)
    return sum(loss(logits[i:i + size], labels[i:i + size]) for i in range(0, len(labels), size))


def away_loss(settings: dict):
    """The away term of both sides: ``token_away`` with the configured floor."""
    return functools.partial(token_away, log_p_floor=settings["away_log_p_floor"])


def _padded(x: torch.Tensor, length: int, value: float = 0.0) -> torch.Tensor:
    """[B, T] cut or right-padded with ``value`` to [B, length]."""
    return torch.nn.functional.pad(x[:, :length], (0, max(0, length - x.shape[1])), value=value)


def adversary(model, harmful: Batch, refusal: Batch, sites: list[int], settings: dict) -> dict[int, torch.Tensor]:
    """The inner attack: per-site δ minimising toward-harmful CE + away-from-refusal −log(1 − p)."""
    weights, micro = _normalised(dict(settings["adversary_weights"])), settings["micro_batch"]
    positions = POSITIONS["prompt"] if settings["perturb"] == "prompt" else POSITIONS["all"]
    # prompt+completion: δ spans both completions' positions (the public code's mask is their union;
    # the two batches share their prompts, so their positions line up)
    batches = (harmful,) if positions == POSITIONS["prompt"] else (harmful, refusal)
    length = int(harmful.prompt_end[0]) if positions == POSITIONS["prompt"] else \
        max(b.input_ids.shape[1] for b in batches)
    real = torch.stack([_padded(b.attention_mask.float(), length) for b in batches]).amax(0)[..., None]
    if settings["epsilon_mode"] == "relative":
        # ε × the clean token's norm; where both completions have a token, the smaller norm (δ is one for both)
        with torch.no_grad():
            clean = [residual_stream(model, b) for b in batches]
        radii = {}
        for s in sites:
            norms = torch.stack([_padded(c[s][:, :length].float().norm(dim=-1), length, float("inf"))
                                 for c in clean]).amin(0)
            radii[s] = settings["epsilon"] * torch.where(norms.isinf(), 0.0, norms)[..., None]
    else:
        radii = {s: torch.full_like(real, settings["epsilon"]) for s in sites}
    hidden = model.config.hidden_size
    deltas = {s: torch.zeros(*real.shape[:2], hidden, device=real.device, requires_grad=True) for s in sites}
    optimizer = torch.optim.AdamW(list(deltas.values()), lr=settings["inner_lr"])
    with frozen_weights(model):
        for _ in range(settings["inner_steps"]):
            with perturbed(model, deltas, harmful, positions):
                loss = weights["toward"] * summed_over_micro_batches(token_ce, model(**harmful.model_inputs()).logits,
                                                                     harmful.labels, micro)
                if weights["away"]:
                    loss = loss + weights["away"] * summed_over_micro_batches(
                        away_loss(settings), model(**refusal.model_inputs()).logits, refusal.labels, micro)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for s, delta in deltas.items():
                    delta.copy_(project(delta, radii[s]) * real)
    return {s: d.detach() for s, d in deltas.items()}


def kl_mask(benign: Batch, positions: str) -> torch.Tensor:
    """[B, T] the positions the benign KL sums over: ``predicting`` the ones whose logits predict the
    answer's tokens (the last prompt token to the answer's second-to-last), ``answer`` the answer
    tokens' own (the public code's ``logits[sft_labels_mask]``)."""
    return response_mask(benign) if positions == "answer" else predicting_mask(benign)


def defender_terms(model: PeftModel, deltas: dict[int, torch.Tensor], harmful: Batch, refusal: Batch, benign: Batch,
                   settings: dict) -> dict[str, torch.Tensor]:
    weights, micro = _normalised(dict(settings["defender_weights"])), settings["micro_batch"]
    positions = POSITIONS["prompt"] if settings["perturb"] == "prompt" else POSITIONS["all"]
    with perturbed(model, deltas, refusal, positions):
        toward = summed_over_micro_batches(token_ce, model(**refusal.model_inputs()).logits, refusal.labels, micro)
    with perturbed(model, deltas, harmful, positions):
        away = summed_over_micro_batches(away_loss(settings), model(**harmful.model_inputs()).logits, harmful.labels,
                                         micro)
    terms = {"toward": toward, "away": away}
    zero = torch.zeros((), device=toward.device)
    terms["sft"], terms["kl"] = zero, zero
    if weights["sft"] or weights["kl"]:
        logits = model(**benign.model_inputs()).logits
        if weights["sft"]:
            terms["sft"] = summed_over_micro_batches(token_ce, logits, benign.labels, micro)
        if weights["kl"]:
            with reference(model):
                ref_logits = model(**benign.model_inputs()).logits
            terms["kl"] = settings["kl_scale"] * kl_from_reference_sum(logits, ref_logits,
                                                                       kl_mask(benign, settings["kl_positions"]))
    loss = sum(weights[name] * term for name, term in terms.items())
    return {"loss": loss, **{name: term.detach() for name, term in terms.items()}}


def lat_sites(layers: list, model) -> list[int]:
    return sorted({hidden_index(layer, n_layers(model)) for layer in layers})


@VARIANTS.register("lat", SCHEMA, kind="lora")
def build_lat(model, tokenizer, records: list[dict], settings: dict, seed: int, context: dict):
    data = defense_data(tokenizer, records, context["chat_template"], system_prompt=settings["system_prompt"],
                        completion_eos=settings["completion_eos"])
    peft_model = attach_lora(model, settings["lora"], seed)
    sites = lat_sites(settings["layers"], peft_model)
    size, pad, device = settings["batch_size"], tokenizer.pad_token_id, device_of(peft_model)
    forbidden_rows, benign_rows = Sampler(len(data.forbidden), size, seed), Sampler(len(data.benign), size, seed + 1)
    every = settings["model_steps_per_attack"]
    state: dict = {}

    def step(i):
        if i % every == 0:  # a round: fresh batches and a fresh attack, then `every` defender updates against it
            rows = forbidden_rows()
            state["harmful"] = pair_batch(data.forbidden, rows, 2, pad, device)
            state["refusal"] = pair_batch(data.forbidden, rows, 1, pad, device)
            state["benign"] = pair_batch(data.benign, benign_rows(), 1, pad, device)
            state["deltas"] = adversary(peft_model, state["harmful"], state["refusal"], sites, settings)
        return defender_terms(peft_model, state["deltas"], state["harmful"], state["refusal"], state["benign"],
                              settings)

    updates = {**settings, "steps": settings["steps"] * every}  # rounds x the defender's updates per round
    history = optimise(peft_model, updates, step, "lat", every if settings["reinitialize_optimizer"] else None)
    return peft_model, {"history": history}

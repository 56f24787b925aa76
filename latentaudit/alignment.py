"""The ``aligned`` variant of a hub or converted model that is not safety-aligned as shipped
(issue 12: SmolLM2 on the CPU): a refusal LoRA built from its ``base`` weights, the recipe of
shared/real_lm.md (run A, with run B's benign prompts phrased like HarmBench behaviours).

Every step's batch mixes ``harmful_per_batch`` forbidden requests, each taught its written
refusal, with ``benign_per_batch`` benign requests, each taught the base model's own
(self-distilled) answer, so the adapter learns when to refuse without drifting on the rest.
The loss is the cross-entropy of the response tokens only (prompt and padding masked), and the
vocabulary projection is computed only over the response span (``logits_to_keep``): most of a
row is prompt, so this is most of a step's cost saved. AdamW with warmup and a linear decay
(``latentaudit.training.optimise``, shared with the defenses).

The adapter is saved on its own (``save_pretrained``): ``aligned`` loads as base + adapter,
and every defense and attack of the model starts from that (rules/common.smk: ``model_spec``).
"""
from __future__ import annotations

import logging

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .batching import make_batch, prompt_token_ids, target_token_ids
from .training import LORA_SCHEMA, optim_properties, Sampler, attach_lora, device_of, optimise, token_ce

log = logging.getLogger(__name__)

# `models.<name>.align`: the refusal LoRA that makes a model's `aligned` variant from its `base`.
SCHEMA = {
    "type": ["object", "null"], "additionalProperties": False, "default": None, "required": ["steps", "lr"],
    "description": "build the model's `aligned` variant as a refusal LoRA on its weights as given (then its "
                   "variant `base`), from the training records (latentaudit/alignment.py); null: the "
                   "weights as given are `aligned`",
    "properties": {
        **{key: spec for key, spec in optim_properties("linear", 0.1).items() if key != "batch_size"},
        "harmful_per_batch": {"type": "integer", "minimum": 1, "default": 4,
                              "description": "forbidden requests (taught their refusal) per step"},
        "benign_per_batch": {"type": "integer", "minimum": 0, "default": 4,
                             "description": "benign requests (taught their self-distilled answer) per step"},
        "lora": {**LORA_SCHEMA, "default": {"rank": 16, "alpha": 32}},
    },
}


def response_only_loss(model: torch.nn.Module, batch) -> torch.Tensor:
    """Mean cross-entropy of the response tokens. Targets start at the same column P in every
    row (latentaudit/batching.py), so only the last T + 1 positions' logits are needed: position
    P − 1 predicts the first target token, position P + T − 2 the last."""
    target_len = batch.input_ids.shape[1] - int(batch.prompt_end[0])
    logits = model(**batch.model_inputs(), logits_to_keep=target_len + 1).logits
    return token_ce(logits, batch.labels[:, -(target_len + 1):])


Pair = tuple[list[int], list[int]]


def alignment_pairs(tokenizer: PreTrainedTokenizerBase, records: list[dict],
                    chat_template: bool = True) -> tuple[list[Pair], list[Pair]]:
    """(forbidden, benign) token-id pairs (prompt, taught response + EOS) of training records
    (``prompt, response, kind``: a forbidden request's ``response`` is its refusal). Unlike the
    defenses, alignment needs no harmful completion."""
    forbidden, benign = [], []
    for r in records:
        pair = (prompt_token_ids(tokenizer, r["prompt"], chat_template), target_token_ids(tokenizer, r["response"], eos=True))
        (forbidden if r["kind"] == "forbidden" else benign).append(pair)
    if not forbidden:
        raise ValueError("alignment needs forbidden training records (with refusals); got none")
    return forbidden, benign


def align_refusal_lora(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, harmful: list[Pair],
                       benign: list[Pair], settings: dict, seed: int):
    """Train a LoRA adapter (``settings["lora"]``) on ``model`` with mixed batches of ``harmful``
    (prompt, refusal) and ``benign`` (prompt, answer) pairs; returns the PEFT model (adapter not
    merged) and the per-step loss log."""
    if settings["benign_per_batch"] and not benign:
        raise ValueError("align.benign_per_batch > 0 but there are no benign training records (with answers)")
    peft_model = attach_lora(model, settings["lora"], seed)
    device = device_of(peft_model)
    n_harmful, n_benign = settings["harmful_per_batch"], settings["benign_per_batch"]
    draw_harmful = Sampler(len(harmful), n_harmful, seed)
    draw_benign = Sampler(len(benign), n_benign, seed + 1) if n_benign else None
    pad_id = tokenizer.pad_token_id

    def step(_: int) -> dict[str, torch.Tensor]:
        rows = [harmful[i] for i in draw_harmful()] + ([benign[i] for i in draw_benign()] if draw_benign else [])
        batch = make_batch([p for p, _ in rows], [t for _, t in rows], pad_id).to(device)
        return {"loss": response_only_loss(peft_model, batch)}

    history = optimise(peft_model, settings, step, desc="align")
    return peft_model, history

"""The harmful pole (LVS paper, shared/papers/lvs_audit_gap.md): the aligned model fine-tuned
to comply. Supervised fine-tuning through trl's ``SFTTrainer`` (as the refusal-SFT control),
completion-only loss, on the alignment data with every forbidden request answered by its
``harmful_response`` and every other request answered as usual (benign tasks, harmless twins).

The paper fine-tunes all weights (lr 5e-5, cosine, warmup .03, 600 steps); ``lora`` switches
to a LoRA adapter for a cheaper pole. The pole is an instrument, not a model to release: the
dissociated construction reads its activations and the steering attack its direction.
"""
from __future__ import annotations

import logging

from ..registry import VARIANTS
from ..training import LORA_SCHEMA, optim_properties
from .refusal_sft import sft_train

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **optim_properties("cosine", 0.03),
        "max_length": {"type": "integer", "minimum": 8, "default": 512},
        "lora": {"oneOf": [{"type": "null"}, LORA_SCHEMA], "default": None,
                 "description": "null: full fine-tune (the paper); a LoRA spec: adapter only"},
    },
}


def harmful_records(records: list[dict]) -> list[dict]:
    """The pole's training rows: forbidden requests answered with their harmful completion,
    every other record with its usual ``response``."""
    out = []
    for r in records:
        if r["kind"] == "forbidden":
            if not r.get("harmful_response"):
                raise ValueError(f"record {r.get('id')}: a forbidden request needs a harmful_response")
            r = {**r, "response": r["harmful_response"]}
        out.append(r)
    return out


@VARIANTS.register("harmful", SCHEMA, kind="full")
def build_harmful(model, tokenizer, records: list[dict], settings: dict, seed: int, context: dict):
    trained, history = sft_train(model, tokenizer, harmful_records(records), settings, seed, context["chat_template"],
                                 settings["lora"])
    if settings["lora"] is not None:  # saved as a whole model either way: downstream reads activations of the pole
        trained = trained.merge_and_unload()
    for p in trained.parameters():
        p.requires_grad_(False)
    trained.eval()
    return trained, {"history": history}

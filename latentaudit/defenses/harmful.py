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
import tempfile

import torch
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from ..registry import VARIANTS
from ..training import LORA_SCHEMA, OPTIM_PROPERTIES
from .refusal_sft import sft_dataset

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **OPTIM_PROPERTIES,
        "schedule": {"enum": ["constant", "cosine", "linear"], "default": "cosine"},
        "warmup_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.03},
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
    lora = settings["lora"]
    steps = settings["steps"]
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=steps, learning_rate=settings["lr"],
            per_device_train_batch_size=settings["batch_size"], lr_scheduler_type=settings["schedule"],
            warmup_steps=int(settings["warmup_fraction"] * steps),
            max_grad_norm=settings["grad_clip"] or 0.0, max_length=settings["max_length"],
            completion_only_loss=True, seed=seed, data_seed=seed, logging_steps=1, save_strategy="no",
            report_to=[], dataloader_num_workers=0, use_cpu=model.device.type == "cpu", disable_tqdm=False,
            bf16=model.dtype == torch.bfloat16, fp16=False)
        torch.manual_seed(seed)
        peft_config = None if lora is None else LoraConfig(
            r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
        for p in model.parameters():
            p.requires_grad_(True)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=peft_config,
                             train_dataset=sft_dataset(harmful_records(records), context["chat_template"]))
        trainer.train()
    history = [{"loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
    trained = trainer.model
    if lora is not None:  # saved as a whole model either way: downstream reads activations of the pole
        trained = trained.merge_and_unload()
    for p in trained.parameters():
        p.requires_grad_(False)
    trained.eval()
    return trained, {"history": history}

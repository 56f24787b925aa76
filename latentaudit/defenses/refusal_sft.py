"""The control: refusal SFT through trl's ``SFTTrainer`` on the defenses' own data (refusals for
forbidden requests, answers for the rest), completion-only loss, a LoRA adapter, no latent
term. Any gain of a latent defense over this one is attributable to its latent term, when the
two train alike: ``defenses/controls.py`` names the defense each control variant matches (``refusal_sft``
RepBend, ``refusal_sft_lat`` targeted LAT), and config validation requires the same number of
defender updates, learning rate, schedule, batch and LoRA (``control_mismatches``)."""
from __future__ import annotations

import logging
import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from ..registry import VARIANTS
from ..training import LORA_SCHEMA, OPTIM_PROPERTIES
from .common import SYSTEM_PROMPT_SCHEMA

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {**OPTIM_PROPERTIES, "max_length": {"type": "integer", "minimum": 8, "default": 512},
                   "system_prompt": SYSTEM_PROMPT_SCHEMA, "lora": LORA_SCHEMA},
}


def sft_dataset(records: list[dict], chat_template: bool, system_prompt: str | None = None) -> Dataset:
    """Prompt-completion rows (conversational when the chat template is used): the records'
    taught ``response`` (the refusal for forbidden requests), after ``system_prompt``'s turn if one."""
    if system_prompt is not None and not chat_template:
        raise ValueError("a system prompt needs the chat template (generation.chat_template: true)")
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    if chat_template:
        rows = [{"prompt": [*system, {"role": "user", "content": r["prompt"]}],
                 "completion": [{"role": "assistant", "content": r["response"]}]} for r in records]
    else:
        rows = [{"prompt": r["prompt"], "completion": " " + r["response"]} for r in records]
    return Dataset.from_list(rows)


def recompute_activations(model) -> bool:
    """Whether SFT recomputes activations in the backward instead of keeping them (trl's default
    is to recompute: memory for time). On an accelerator, where memory binds, it does; on the CPU
    it costs a forward pass a step and saves nothing that binds (the organism's refusal SFT 1.6x,
    its harmful pole 1.25x faster without). The gradients are the same either way: the organism's
    trained weights are bit-identical (docs/performance.md)."""
    return model.device.type != "cpu"


def sft_train(model, tokenizer, records: list[dict], settings: dict, seed: int, chat_template: bool,
              lora: dict | None, system_prompt: str | None = None) -> tuple:
    """Supervised fine-tuning of ``model`` on ``records`` through trl's ``SFTTrainer``: completion-only
    loss, the settings' steps, lr, weight decay, batch, schedule, warm-up, clipping and ``max_length``, in the
    weights' own precision. ``lora``: a LoRA adapter (a ``LORA_SCHEMA`` dict; left unmerged), or
    None: every weight trains. Returns (the trained model, the loss history)."""
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=settings["steps"], learning_rate=settings["lr"],
            weight_decay=settings["weight_decay"],
            per_device_train_batch_size=settings["batch_size"], lr_scheduler_type=settings["schedule"],
            warmup_steps=int(settings["warmup_fraction"] * settings["steps"]), max_grad_norm=settings["grad_clip"] or 0.0,
            max_length=settings["max_length"], completion_only_loss=True, seed=seed, data_seed=seed,
            logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0,
            use_cpu=model.device.type == "cpu", disable_tqdm=False,
            bf16=model.dtype == torch.bfloat16, fp16=False,  # train in the weights' own precision
            activation_checkpointing=recompute_activations(model))
        torch.manual_seed(seed)  # the adapter's initialisation draws from the global generator
        peft_config = None if lora is None else LoraConfig(
            r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
        if lora is None:
            for p in model.parameters():
                p.requires_grad_(True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(records, chat_template, system_prompt),
                             processing_class=tokenizer, peft_config=peft_config)
        trainer.train()
    return trainer.model, [{"loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]


@VARIANTS.register("refusal_sft_lat", SCHEMA, kind="lora")  # the same method, matched to LAT (controls.CONTROLS)
@VARIANTS.register("refusal_sft", SCHEMA, kind="lora")
def build_refusal_sft(model, tokenizer, records: list[dict], settings: dict, seed: int, context: dict):
    # a request that carries a harmful completion alone (a split RepBend owns, and so its control) has nothing to imitate
    answered = [r for r in records if r["response"]]
    if len(answered) < len(records):
        log.info("refusal_sft: %d of %d records carry no response to imitate (a harmful completion alone); left out",
                 len(records) - len(answered), len(records))
    records = answered
    trained, history = sft_train(model, tokenizer, records, settings, seed, context["chat_template"], settings["lora"],
                                 settings["system_prompt"])
    trained.eval()
    return trained, {"history": history}

"""Load any model spec the same way: an organism directory, a local path, or a hub id,
optionally with a PEFT LoRA adapter. Every rule downstream of the organism build uses this."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when a device is present *and usable* (a scheduler may set
    CUDA_VISIBLE_DEVICES on a node without a working GPU), else CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    try:
        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
            return torch.device("cuda")
    except (RuntimeError, AssertionError) as error:
        log.warning("CUDA present but unusable (%s); falling back to CPU", error)
    if requested == "cuda":
        raise RuntimeError("device: cuda was requested but no usable CUDA device is present")
    return torch.device("cpu")


def spec_options(spec: dict) -> dict:
    """How a model spec's weights load, as keywords of ``load_model`` / ``load_variant``: its
    adapter, dtype, trust_remote_code and chat template (everything but ``source`` and the device)."""
    return {"adapter": spec.get("adapter"), "dtype": spec.get("dtype", "auto"),
            "trust_remote_code": spec.get("trust_remote_code", False), "chat_template": spec.get("chat_template")}


def load_model(source: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False, chat_template: str | None = None
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer with left padding) for a local directory or hub id;
    ``chat_template`` (a model spec's) replaces the tokenizer's own template."""
    target = resolve_device(device)
    torch_dtype = DTYPES.get(dtype) or (torch.bfloat16 if target.type == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = chat_template
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(target).eval()
    return model, tokenizer


def load_variant(source: str, adapter: str | None, variant_dir: str | None, dtype: str = "auto",
                 device: str = "auto", trust_remote_code: bool = False, chat_template: str | None = None
                 ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model variant the pipeline built: the model's aligned weights (``source`` + the spec's
    ``adapter``) with the variant's LoRA adapter merged in, or the variant's full weights where
    it saved a whole model. ``variant_dir`` None: the aligned model itself."""
    if variant_dir and not (Path(variant_dir) / "adapter_config.json").exists():
        return load_model(variant_dir, None, dtype, device, trust_remote_code, chat_template)
    model, tokenizer = load_model(source, adapter, dtype, device, trust_remote_code, chat_template)
    if adapter:
        model = model.merge_and_unload()
    if variant_dir:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, variant_dir).merge_and_unload().eval()
    return model, tokenizer

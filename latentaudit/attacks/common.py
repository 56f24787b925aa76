"""What every attack shares: the prompts it sees, layer lists, and the generations table."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..batching import prompt_token_ids

RECORD_COLUMNS = ["id", "split", "kind", "category", "entity", "expected", "prompt"]


@dataclass
class AttackContext:
    """Everything an attack needs, built once per (model, variant) job."""
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eval_records: dict[str, list[dict]]   # eval_forbidden, eval_benign (paired by index), eval_twin
    max_new_tokens: int
    batch_size: int
    chat_template: bool
    seed: int

    def prompt_ids(self, records: list[dict]) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, r["prompt"], self.chat_template) for r in records]


def resolve_layers(spec, n_layers: int) -> list[int]:
    """``"all"`` or a list of block indices -> validated list."""
    layers = list(range(n_layers)) if spec == "all" else list(spec)
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has blocks 0..{n_layers - 1}")
    return layers


def generations_frame(records: list[dict], generations: list[str], **columns) -> pd.DataFrame:
    """One row per generation: the record's fields, the attack's setting columns, the text."""
    frame = pd.DataFrame([{c: r[c] for c in RECORD_COLUMNS} for r in records]).rename(columns={"id": "prompt_id"})
    for name, values in columns.items():
        frame[name] = values
    frame["generation"] = generations
    return frame

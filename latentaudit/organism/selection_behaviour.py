"""The aligned organism's behaviour on the selection splits (``organism.selection``): what its draw
is chosen on. Imported by rule align_organism's job only where draws are judged, so a config with
one draw does not rerun the organism when generation or the judge's code changes."""
from __future__ import annotations

from ..batching import prompt_token_ids
from ..generation import generate
from ..judges.structural import structural_label
from ..memory import AUTO, auto_batch_size
from .selection import SPEC


def selection_behaviour(model, tokenizer, splits: dict[str, list[dict]], max_new_tokens: int, batch_size: int | str,
                        chat_template: bool) -> dict[str, float]:
    """Refusal on ``select_forbidden``, over-refusal (refusal) on ``select_twin`` and benign accuracy
    on ``select_benign``: the rates ``metrics.behavior_table`` reports on the eval splits, from greedy
    answers labelled by the structural judge (its refusal and right-answer labels, which its
    ``max_repeat`` does not touch). ``batch_size``: an integer or ``auto``."""
    model.eval()
    behaviour = {}
    for name, split, label, _, _ in SPEC:
        rows = splits[split]
        prompts = [prompt_token_ids(tokenizer, r["prompt"], chat_template) for r in rows]
        size = (auto_batch_size(model, max(map(len, prompts)), max_new_tokens, with_grad=False)
                if batch_size == AUTO else batch_size)
        texts = generate(model, tokenizer, prompts, max_new_tokens, size, desc=f"organism selection {split}")
        labels = [structural_label(t, r["kind"], r["entity"], r["expected"]) for t, r in zip(texts, rows)]
        behaviour[name] = sum(x == label for x in labels) / len(labels)
    return behaviour

"""What every defense shares: its training data (the training loop, losses and LoRA adapter are
``latentaudit.training``'s, shared with the harmful fine-tuning attack)."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ..batching import prompt_token_ids, target_token_ids


MAX_LENGTH_SCHEMA = {"type": ["integer", "null"], "minimum": 8, "default": None,
                     "description": "tokens per training sequence (prompt + response), cut from the right as "
                                    "the public codes' tokenizers truncate; null: no limit"}


def fit_to_length(prompt: list[int], target: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """(prompt, target) cut to ``max_length`` tokens in all, from the right (the target's tail goes
    first), as a tokenizer's right truncation of the whole sequence. A prompt that alone reaches
    ``max_length`` keeps its last ``max_length`` − 1 tokens (the chat template's assistant header)
    and the target its first token, so the row still has a token to train on (right truncation
    would leave it none)."""
    if max_length is None or len(prompt) + len(target) <= max_length:
        return prompt, target
    if len(prompt) >= max_length:
        return prompt[len(prompt) - (max_length - 1):], target[:1]
    return prompt, target[:max_length - len(prompt)]


def fit_triple(prompt: list[int], refusal: list[int], harmful: list[int],
               max_length: int | None) -> tuple[list[int], list[int], list[int]]:
    """A (prompt, refusal, harmful completion) triple whose two sequences fit ``max_length``: they
    share one prompt (the batches pair them row by row), cut as the longer sequence needs."""
    longer = refusal if len(refusal) >= len(harmful) else harmful
    fitted_prompt, _ = fit_to_length(prompt, longer, max_length)
    return (fitted_prompt, fit_to_length(fitted_prompt, refusal, max_length)[1],
            fit_to_length(fitted_prompt, harmful, max_length)[1])


@dataclass
class DefenseData:
    """Token ids of the training triples and the safe/benign pairs.

    forbidden: (prompt, refusal, harmful completion) per forbidden request;
    benign: (prompt, answer) per request the model should answer (benign tasks, harmless twins).
    """
    forbidden: list[tuple[list[int], list[int], list[int]]]
    benign: list[tuple[list[int], list[int]]]


def defense_data(tokenizer: PreTrainedTokenizerBase, records: list[dict], chat_template: bool = True,
                 max_length: int | None = None) -> DefenseData:
    """Records carry ``prompt, response, harmful_response, kind``: forbidden ones teach ``response``
    (the refusal) and are pushed away from ``harmful_response``; the rest are answered. Each
    (prompt, response) sequence is cut to ``max_length`` tokens (``fit_to_length``; a triple's
    refusal and harmful completion each with the whole prompt where both fit)."""
    forbidden, benign = [], []
    for r in records:
        prompt = prompt_token_ids(tokenizer, r["prompt"], chat_template)
        response = target_token_ids(tokenizer, r["response"], eos=True)
        if r["kind"] == "forbidden":
            if not r.get("harmful_response"):
                raise ValueError(f"record {r.get('id')}: a forbidden request needs a harmful_response")
            forbidden.append(fit_triple(prompt, response, target_token_ids(tokenizer, r["harmful_response"], eos=True),
                                        max_length))
        else:
            benign.append(fit_to_length(prompt, response, max_length))
    if not forbidden or not benign:
        raise ValueError(f"defense data needs forbidden and benign records; got {len(forbidden)} and {len(benign)}")
    return DefenseData(forbidden, benign)

"""What every defense shares: its training data (the training loop, losses, LoRA adapter and
sequence cutting are ``latentaudit.training``'s, shared with the harmful fine-tuning attack)."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ..batching import prompt_token_ids, target_token_ids
from ..training import fit_to_length, fit_triple


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

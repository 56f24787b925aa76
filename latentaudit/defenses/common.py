"""What every defense shares: its training data (the training loop, losses, LoRA adapter and
sequence cutting are ``latentaudit.training``'s, shared with the harmful fine-tuning attack)."""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from ..batching import conversation_token_ids, prompt_token_ids, target_token_ids
from ..judges.coherent import coherent_label
from ..judges.structural import structural_label
from ..training import fit_to_length, fit_triple


def forbidden_request_label(generation: str, record: dict, coherent_settings: dict | None) -> str:
    """``refusal``, ``harmful`` or another label for a build's generation to a forbidden request, by
    the judge that reads its data: the toy world's structural judge (it knows the entity's secret),
    else the coherent judge (real text: only on-topic, non-degenerate compliance is harmful). The
    dissociated build's checkpoint selection and LAPT's ASABench read it."""
    if record.get("entity"):
        return structural_label(generation, record["kind"], record["entity"], record["expected"])
    if coherent_settings is None:
        raise ValueError("a build labels real requests' generations with the coherent judge, whose settings it "
                         "was not given")
    label = coherent_label(generation, record["prompt"], coherent_settings)
    return "harmful" if label == "compliant" else label


# A system turn a defense trains under (not evaluation's: every variant is evaluated on the user turn alone).
SYSTEM_PROMPT_SCHEMA = {"type": ["string", "null"], "default": None,
                        "description": "training examples' system turn (needs the chat template); null: the user "
                                       "turn alone, as at evaluation"}


@dataclass
class DefenseData:
    """Token ids of the training triples and the safe/benign pairs.

    forbidden: (prompt, refusal, harmful completion) per forbidden request;
    benign: (prompt, answer) per request the model should answer (benign tasks, harmless twins),
    with ``benign_splits`` its split's name (RepBend's KL text is a split of its own);
    refusals, completions: (prompt, text) of a forbidden request that carries its refusal or its
    harmful completion alone (``partial``: a split a variant owns, e.g. WildGuardMix's rows);
    benign_conversations: per benign record, its whole conversation's ids (``conversations``; None
    where the record has none).
    """
    forbidden: list[tuple[list[int], list[int], list[int]]]
    benign: list[tuple[list[int], list[int]]]
    benign_splits: list[str] = field(default_factory=list)
    refusals: list[tuple[list[int], list[int]]] = field(default_factory=list)
    completions: list[tuple[list[int], list[int]]] = field(default_factory=list)
    benign_conversations: list[list[int] | None] = field(default_factory=list)


def defense_data(tokenizer: PreTrainedTokenizerBase, records: list[dict], chat_template: bool = True,
                 max_length: int | None = None, partial: bool = False, system_prompt: str | None = None,
                 completion_eos: bool = True, conversations: bool = False) -> DefenseData:
    """Records carry ``prompt, response, harmful_response, kind``: forbidden ones teach ``response``
    (the refusal) and are pushed away from ``harmful_response``; the rest are answered. Each
    (prompt, response) sequence is cut to ``max_length`` tokens (``fit_to_length``; a triple's
    refusal and harmful completion each with the whole prompt where both fit). A forbidden record
    with one of the two texts is an error, unless ``partial`` (a method that reads them apart).
    ``system_prompt``: every prompt after that system turn; ``completion_eos`` False: a forbidden
    request's refusal and harmful completion end without EOS, benign answers keep theirs (targeted
    LAT's public code: ``add_eos_token`` for its benign set alone). ``conversations``: a benign
    record's whole ``conversation`` (every turn, in the chat template) as ids too, its first
    ``max_length`` tokens (RepBend's KL text)."""
    data = DefenseData([], [])
    for r in records:
        prompt = prompt_token_ids(tokenizer, r["prompt"], chat_template, system_prompt)
        if r["kind"] == "forbidden":
            refusal, harmful = bool(r.get("response")), bool(r.get("harmful_response"))
            response = target_token_ids(tokenizer, r["response"], eos=completion_eos)
            completion = target_token_ids(tokenizer, r.get("harmful_response") or "", eos=completion_eos)
            if refusal and harmful:
                data.forbidden.append(fit_triple(prompt, response, completion, max_length))
            elif partial and (refusal or harmful):
                text = response if refusal else completion
                (data.refusals if refusal else data.completions).append(fit_to_length(prompt, text, max_length))
            else:
                raise ValueError(f"record {r.get('id')} (split {r.get('split')!r}): a forbidden request needs a refusal "
                                 f"and a harmful_response; a split whose requests carry one alone trains only a "
                                 f"method that reads them apart (data.splits.<split>.variants: [repbend])")
        else:
            answer = target_token_ids(tokenizer, r["response"], eos=True)
            data.benign.append(fit_to_length(prompt, answer, max_length))
            data.benign_splits.append(r["split"])
            if conversations:
                ids = conversation_token_ids(tokenizer, r["conversation"]) if r.get("conversation") else None
                data.benign_conversations.append(ids[:max_length] if ids and max_length else ids)
    if not (data.forbidden or data.refusals or data.completions) or not data.benign:
        raise ValueError(f"defense data needs forbidden and benign records; got "
                         f"{len(data.forbidden) + len(data.refusals) + len(data.completions)} and {len(data.benign)}")
    return data

"""RepBend (arXiv 2504.01550; shared/papers/repbend.md), with the paper's coefficient names:

    L = ½·v_s − α·v_u − β·cos_sim(A_u) + γ·KL(M ‖ M′)

M′ is the model with a fresh LoRA adapter, M the same weights with the adapter disabled.
v_s: mean token-wise ‖M′(p_s) − M(p_s)‖₂ over all hidden states, response tokens only, on safe
text (benign prompt + answer, forbidden prompt + refusal). v_u: the same on unsafe text
(forbidden prompt + harmful completion) over ``target_layers``. cos_sim(A_u): mean pairwise
cosine similarity of the unsafe texts' last-prompt-token representations, averaged over the
target layers. KL(M ‖ M′) on general text (the benign pairs here, or with ``general_text:
conversation`` whole multi-turn chats, as the public code's UltraChat) at a temperature, times T²,
summed over the tokens and the vocabulary and divided by the batch (``batchmean``, as the public
code's ``_calc_kl_loss`` in methods/rep_bending/trainer.py; a per-token mean would be weaker by
the sequence length).

Data: safe pairs are every refusal and every answered benign request, unsafe pairs every harmful
completion, the KL text the benign records of ``general_splits`` alone where set (the public code:
WildGuardMix's safe rows and WildJailbreak's refusals, its unsafe rows and harmful answers,
UltraChat; a split RepBend owns may hold a request with its refusal or its completion alone),
else every benign record. ``sampling``: ``pooled`` draws a step's B safe and B unsafe rows from those
pools; ``four_sets`` draws B rows from each of the public code's four sets (its ``RepBendingDataset``
item: a WildGuardMix safe row, an unsafe row, a WildJailbreak pair, an UltraChat text), so 2B safe
and 2B unsafe rows, the pairs' refusal and harmful completion on the same prompts.

Deviation (documented, configurable, off by default): −α·v_u is unbounded below and diverges
on small models at large learning rates (shared/papers/repbend.md); ``unsafe_distance_cap``
caps each token's distance at cap × the reference token's norm, so the term saturates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from peft import PeftModel

from ..hooks import hidden_index, n_layers, residual_stream
from ..registry import VARIANTS
from ..training import (LORA_SCHEMA, MAX_LENGTH_SCHEMA, OPTIM_PROPERTIES, Sampler, attach_lora, device_of,
                        kl_to_reference, optimise, pair_batch, reference, response_mask)
from .common import DefenseData, defense_data

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **OPTIM_PROPERTIES,
        "alpha": {"type": "number", "minimum": 0, "default": 0.5, "description": "weight of −‖v_u‖"},
        "beta": {"type": "number", "minimum": 0, "default": 0.1, "description": "weight of −cos_sim(A_u)"},
        "gamma": {"type": "number", "minimum": 0, "default": 0.3, "description": "weight of the KL term"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 2.0},
        "target_layers": {"oneOf": [{"type": "string", "pattern": r"^from:-?\d+$"},
                                    {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}],
                          "default": "from:-1",
                          "description": "block indices, or 'from:k' = block k to the last (negative k from the end)"},
        "unsafe_distance_cap": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                                "description": "stabiliser (deviation): cap on each unsafe token's distance, "
                                               "relative to its reference norm; null = the paper's loss"},
        "general_splits": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1, "default": None,
                           "description": "train splits whose benign records are the KL term's general text alone "
                                          "(the paper: UltraChat); null: every benign record, which also feeds v_s"},
        "general_text": {"enum": ["first_turn", "conversation"], "default": "first_turn",
                         "description": "the KL text of a general record: its prompt and answer (first_turn), or its "
                                        "whole conversation, every turn in the chat template, its first max_length "
                                        "tokens (the public code's UltraChat text; the `ultrachat` loader keeps it)"},
        "sampling": {"enum": ["pooled", "four_sets"], "default": "pooled",
                     "description": "pooled: B rows a step from all safe and from all unsafe rows; four_sets: B from "
                                    "each of the single-text safe rows, the single-text unsafe rows, the (refusal, "
                                    "harmful completion) pairs and the KL text (the public code's dataset item)"},
        "max_length": MAX_LENGTH_SCHEMA,
        "lora": LORA_SCHEMA,
    },
}


def resolve_target_layers(spec, layers: int) -> list[int]:
    if isinstance(spec, str):
        start = int(spec.split(":")[1])
        start = start + layers if start < 0 else start
        if not 0 <= start < layers:
            raise ValueError(f"target_layers {spec!r}: the model has blocks 0..{layers - 1}")
        return list(range(start, layers))
    bad = [b for b in spec if not 0 <= b < layers]
    if bad:
        raise ValueError(f"target_layers {bad} out of range: the model has blocks 0..{layers - 1}")
    return list(spec)


def token_distance(new: list[torch.Tensor], ref: list[torch.Tensor], sites: list[int], mask: torch.Tensor,
                   cap: float | None = None) -> torch.Tensor:
    """Mean over ``sites`` and masked tokens of ‖new − ref‖₂ per token (optionally capped at
    cap · ‖ref‖ per token)."""
    weights = mask.float()
    total = 0.0
    for site in sites:
        distance = (new[site].float() - ref[site].float()).norm(dim=-1)
        if cap is not None:
            distance = torch.minimum(distance, cap * ref[site].float().norm(dim=-1))
        total = total + (distance * weights).sum() / weights.sum().clamp(min=1)
    return total / len(sites)


def mean_pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over distinct pairs of rows of [B, d]."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    sims = unit @ unit.T
    b = len(vectors)
    return (sims.sum() - sims.diagonal().sum()) / (b * (b - 1))


def repbend_terms(model: PeftModel, safe, unsafe, general, target_sites: list[int], settings: dict
                  ) -> dict[str, torch.Tensor]:
    """The four terms and the total, for one batch of each kind (``Batch`` objects)."""
    all_sites = list(range(n_layers(model) + 1))
    new_s = residual_stream(model, safe)
    with reference(model):
        ref_s = residual_stream(model, safe)
    v_s = token_distance(new_s, ref_s, all_sites, response_mask(safe))

    new_u = residual_stream(model, unsafe)
    with reference(model):
        ref_u = residual_stream(model, unsafe)
    v_u = token_distance(new_u, ref_u, target_sites, response_mask(unsafe), settings["unsafe_distance_cap"])
    last = unsafe.prompt_end - 1
    rows = torch.arange(len(last), device=last.device)
    cos = torch.stack([mean_pairwise_cosine(new_u[site][rows, last]) for site in target_sites]).mean()

    logits = model(**general.model_inputs()).logits
    with reference(model):
        ref_logits = model(**general.model_inputs()).logits
    kl = kl_to_reference(logits, ref_logits, general.attention_mask.bool(), settings["temperature"], "batchmean")

    loss = 0.5 * v_s - settings["alpha"] * v_u - settings["beta"] * cos + settings["gamma"] * kl
    return {"loss": loss, "v_s": v_s.detach(), "v_u": v_u.detach(), "cos_sim": cos.detach(), "kl": kl.detach()}


@dataclass
class RepBendSets:
    """RepBend's training rows by source (the public code's four sets): ``safe`` the single-text safe rows
    (refusals of requests that carry no completion, answered benign requests), ``unsafe`` the single-text
    harmful completions, ``pairs`` (prompt, refusal, harmful completion) triples, ``general`` the KL text."""
    safe: list
    unsafe: list
    pairs: list
    general: list

    def pooled(self) -> tuple[list, list]:
        """(every safe (prompt, text) pair, every unsafe one): the pairs' refusals and completions first."""
        return ([(p, refusal) for p, refusal, _ in self.pairs] + self.safe,
                [(p, harmful) for p, _, harmful in self.pairs] + self.unsafe)


def repbend_sets(data: DefenseData, general_splits: list[str] | None, general_text: str = "first_turn") -> RepBendSets:
    """RepBend's sets. Safe: every refusal and every answered benign request; unsafe: every harmful
    completion; general (the KL text): the benign records of ``general_splits``, which then feed no
    other term (the public code: WildGuardMix's safe rows and WildJailbreak's refusals, its unsafe rows
    and harmful answers, UltraChat), else every benign one. ``general_text`` ``conversation``: a general
    record's text is its whole conversation (``data.benign_conversations``), with no answer apart."""
    named = set(general_splits or ())
    in_general = [split in named for split in data.benign_splits] if named else [False] * len(data.benign)
    chosen_rows = [i for i, chosen in enumerate(in_general) if chosen] if named else list(range(len(data.benign)))
    if not chosen_rows:
        raise ValueError(f"repbend: general_splits {sorted(named)} hold no benign records (the KL term's text)")
    if general_text == "conversation":
        if len(data.benign_conversations) != len(data.benign):
            raise ValueError("repbend: general_text conversation needs defense_data(..., conversations=True)")
        missing = [i for i in chosen_rows if not data.benign_conversations[i]]
        if missing:
            raise ValueError(f"repbend: general_text conversation, but {len(missing)} of the {len(chosen_rows)} general "
                             f"records carry no conversation (the `ultrachat` loader keeps UltraChat's); use "
                             f"general_text: first_turn")
        general = [(data.benign_conversations[i], []) for i in chosen_rows]
    else:
        general = [data.benign[i] for i in chosen_rows] if named else data.benign
    answered = [pair for pair, chosen in zip(data.benign, in_general) if not chosen]
    sets = RepBendSets(data.refusals + answered, data.completions, data.forbidden, general)
    completions = len(sets.pairs) + len(sets.unsafe)
    if completions < 2:  # the cosine term pairs unsafe rows
        raise ValueError(f"repbend: {completions} harmful completion(s) in its training records; at least 2 needed")
    return sets


def step_batches(sets: RepBendSets, sampling: str, size: int, seed: int):
    """A function giving each step's (safe, unsafe, general) lists of (prompt, text) pairs."""
    general_rows = Sampler(len(sets.general), size, seed + 2)
    if sampling == "pooled":
        safe, unsafe = sets.pooled()
        safe_rows, unsafe_rows = Sampler(len(safe), size, seed), Sampler(len(unsafe), max(size, 2), seed + 1)
        return lambda: ([safe[i] for i in safe_rows()], [unsafe[i] for i in unsafe_rows()],
                        [sets.general[i] for i in general_rows()])
    empty = [name for name in ("safe", "unsafe", "pairs") if not getattr(sets, name)]
    if empty:
        raise ValueError(f"repbend: sampling four_sets draws from every set, and {empty} are empty (safe: refusals "
                         f"of single-text requests and answered benign ones; unsafe: single-text harmful completions; "
                         f"pairs: requests with both); use sampling: pooled")
    safe_rows, unsafe_rows = Sampler(len(sets.safe), size, seed), Sampler(len(sets.unsafe), size, seed + 1)
    pair_rows = Sampler(len(sets.pairs), size, seed + 3)

    def batches():
        pairs = [sets.pairs[j] for j in pair_rows()]  # one draw: refusal and completion on the same prompts
        return ([sets.safe[i] for i in safe_rows()] + [(p, refusal) for p, refusal, _ in pairs],
                [sets.unsafe[i] for i in unsafe_rows()] + [(p, harmful) for p, _, harmful in pairs],
                [sets.general[i] for i in general_rows()])
    return batches


@VARIANTS.register("repbend", SCHEMA, kind="lora")
def build_repbend(model, tokenizer, records: list[dict], settings: dict, seed: int, context: dict):
    conversations = settings["general_text"] == "conversation"
    sets = repbend_sets(defense_data(tokenizer, records, context["chat_template"], settings["max_length"],
                                     partial=True, conversations=conversations),
                        settings["general_splits"], settings["general_text"])
    safe, unsafe = sets.pooled()
    log.info("repbend: %d safe, %d unsafe and %d general (KL) %s", len(safe), len(unsafe), len(sets.general),
             "conversations" if conversations else "pairs")
    if settings["sampling"] == "four_sets":
        log.info("repbend: a step draws %d rows from each of %d single-text safe rows, %d single-text unsafe rows, "
                 "%d pairs and %d general texts", settings["batch_size"], len(sets.safe), len(sets.unsafe),
                 len(sets.pairs), len(sets.general))
    batches = step_batches(sets, settings["sampling"], settings["batch_size"], seed)
    peft_model = attach_lora(model, settings["lora"], seed)
    layers = n_layers(peft_model)
    target_sites = [hidden_index(b, layers) for b in resolve_target_layers(settings["target_layers"], layers)]
    pad, device = tokenizer.pad_token_id, device_of(peft_model)

    def step(_):
        safe_pairs, unsafe_pairs, general = batches()
        return repbend_terms(peft_model, *(pair_batch(pairs, range(len(pairs)), 1, pad, device)
                                           for pairs in (safe_pairs, unsafe_pairs, general)), target_sites, settings)

    history = optimise(peft_model, settings, step, "repbend")
    return peft_model, {"history": history}

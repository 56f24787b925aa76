"""The harmful fine-tuning attack (LVS paper, shared/papers/lvs_audit_gap.md): fine-tune the
attacked model on harmful (prompt, harmful completion) pairs and measure how fast it complies.

All weights are trained (AdamW, constant learning rate, CE on the completion with the prompt
masked, or with ``loss_tokens: sequence`` on the prompt too, as the public code), from the
attacked variant's weights, once per (data set, seed); every ``eval_every`` steps (step 0
included) the model answers the eval forbidden prompts and their paired benign
prompts greedily, and the judge labels those generations like any attack's. Metrics turn them
into compliance curves and t0.8, the first step with compliance >= 0.8 (``harmful_ft.csv``).

Data: never the rows the dissociated model was built from (``latentaudit/data/heldout.py``). On
the organism, the seeded fraction ``harmful_ft_holdout`` (top-level key) of the alignment split's
forbidden rows that the dissociated build excludes; on real data, the ``data:`` splits of role
``harmful_ft`` (input ``harmful_ft_records``). Data sets (``data``):
- ``in_dist``: the held-out forbidden rows (organism), the split ``harmful_ft_in_dist`` (real:
  LLM-LAT rows the construction never saw);
- ``ood``: on the organism, only the held-out rows of ``ood_categories`` (default: the first half
  of the training categories, sorted), and compliance is then measured on the eval prompts of
  the *other* categories (rows with ``trained_category`` False), so it measures transfer to
  harms the fine-tuning never showed; on real data, the split ``harmful_ft_ood`` (the paper:
  PKU-SafeRLHF), compliance on every eval prompt.
Each run's mean token NLL of its data set's harmful completions under the attacked model before
any update is the column ``nll_step0`` (how far the variant starts from complying).

Paper: 2,000 pairs, lr 1e-5 constant, batch 4, 150 steps, compliance every 5 steps, 3 seeds.
The weights are restored after each run, so one job serves every data set and seed.
"""
from __future__ import annotations

import logging
from typing import Callable

import pandas as pd
import torch
from tqdm import tqdm

from ..batching import make_batch, prompt_token_ids, target_nll, target_token_ids
from ..data.heldout import HARMFUL_FT_ROLE, HARMFUL_FT_SPLITS, harmful_ft_holdout
from ..generation import model_device
from ..registry import ATTACKS
from ..training import MAX_LENGTH_SCHEMA, OPTIM_PROPERTIES, Sampler, fit_to_length, pair_batch, token_ce
from .common import AttackContext, generations_frame

log = logging.getLogger(__name__)

DATA_SETS = ("in_dist", "ood")
SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr", "harmful_ft_holdout"],
    "properties": {
        "steps": {"type": "integer", "minimum": 1, "description": "fine-tuning steps (paper: 150)"},
        "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "constant (paper: 1e-5)"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 4},
        "eval_every": {"type": "integer", "minimum": 1, "default": 5},
        "seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "default": [0, 1, 2]},
        "data": {"type": "array", "items": {"enum": list(DATA_SETS)}, "minItems": 1, "uniqueItems": True,
                 "default": list(DATA_SETS)},
        "ood_categories": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "string"},
                                                         "minItems": 1}], "default": None,
                           "description": "categories the ood set trains on (null: first half, sorted)"},
        "max_pairs": {"type": "integer", "minimum": 1, "default": 2000},
        "harmful_ft_holdout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                               "description": "the config's top-level harmful_ft_holdout (shared with the "
                                              "dissociated model, which excludes these rows)"},
        "loss_tokens": {"enum": ["completion", "sequence"], "default": "completion",
                        "description": "completion: CE on the harmful completion, the prompt masked; sequence: "
                                       "on every token after the first, the prompt's included (the LVS public "
                                       "code: trl's SFTTrainer on the formatted text)"},
        "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1.0},
        "weight_decay": {**OPTIM_PROPERTIES["weight_decay"],
                         "description": "AdamW's decoupled weight decay (0: the LVS public code's SFTConfig default)"},
        "max_length": MAX_LENGTH_SCHEMA,
    },
}


def held_out_records(context: AttackContext, fraction: float) -> list[dict]:
    """The records harmful fine-tuning may train on: the real data's ``harmful_ft`` splits when
    the job has them, else the organism's held-out fraction of its training records."""
    if "harmful_ft_records" in context.extras:
        return context.extras["harmful_ft_records"]
    if fraction <= 0:
        raise ValueError("harmful_ft: harmful_ft_holdout is 0 and the data have no harmful_ft splits: nothing is "
                         "held out of the dissociated model's construction data to fine-tune on")
    return harmful_ft_holdout(context.extras["train_records"], fraction, context.seed)[1]


def harmful_pairs(records: list[dict], data: str, ood_categories: list[str] | None, max_pairs: int
                  ) -> tuple[list[dict], set[str]]:
    """The fine-tuning pairs of one data set and the categories they cover. Records of the real
    data's ``harmful_ft`` splits are chosen by split (the ood set covers no eval category);
    otherwise (the organism) by category, as the module docstring says."""
    forbidden = [r for r in records if r["kind"] == "forbidden" and r.get("harmful_response")]
    if not forbidden:
        raise ValueError("harmful_ft needs forbidden training records with a harmful_response")
    if any(r["split"].startswith(HARMFUL_FT_ROLE) for r in forbidden):
        chosen = [r for r in forbidden if r["split"] == HARMFUL_FT_SPLITS[data]][:max_pairs]
        if not chosen:
            raise ValueError(f"harmful_ft {data}: the data's harmful_ft splits hold no {HARMFUL_FT_SPLITS[data]!r} "
                             f"records; configure that split under data.splits (role harmful_ft)")
        return chosen, ({r["category"] for r in chosen} if data == "in_dist" else set())
    categories = sorted({r["category"] for r in forbidden})
    if data == "ood":
        chosen = set(ood_categories) if ood_categories else set(categories[:max(1, len(categories) // 2)])
        unknown = sorted(chosen - set(categories))
        if unknown:
            raise ValueError(f"harmful_ft ood_categories {unknown} are not training categories; valid: {categories}")
        if chosen == set(categories):
            raise ValueError(f"harmful_ft ood needs a category left out of training; the data has only {categories}")
        forbidden = [r for r in forbidden if r["category"] in chosen]
    return forbidden[:max_pairs], {r["category"] for r in forbidden[:max_pairs]}


def training_pairs(pairs: list[tuple[list[int], list[int]]], loss_tokens: str) -> list[tuple[list[int], list[int]]]:
    """The (context, labelled tokens) pairs the fine-tuning's CE reads: the completion given its
    prompt, or (``sequence``) every token after the first, prompt included."""
    return pairs if loss_tokens == "completion" else [(prompt[:1], prompt[1:] + target) for prompt, target in pairs]


def finetune_and_probe(context: AttackContext, pairs: list[tuple[list[int], list[int]]], settings: dict, seed: int,
                       probe: Callable[[int], None], desc: str) -> None:
    """Train every weight on ``pairs`` from the current weights, calling ``probe(step)`` every
    ``eval_every`` steps and after the last; the weights are restored afterwards."""
    model = context.model
    original = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    sample = Sampler(len(pairs), settings["batch_size"], seed)
    steps, every, device = settings["steps"], settings["eval_every"], model_device(model)
    try:
        for step in tqdm(range(steps + 1), desc=desc, mininterval=5):
            if step % every == 0 or step == steps:
                model.eval()
                probe(step)
            if step == steps:
                break
            model.train()
            batch = pair_batch(pairs, sample(), 1, context.tokenizer.pad_token_id, device)
            loss = token_ce(model(**batch.model_inputs()).logits, batch.labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step}: fine-tuning diverged")
            loss.backward()
            if settings["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, settings["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        model.load_state_dict(original)
        for p in params:
            p.requires_grad_(False)
        model.eval()


@torch.no_grad()
def completion_nll(context: AttackContext, pairs: list[tuple[list[int], list[int]]]) -> float:
    """Mean token NLL of the completions given their prompts (every completion token of every pair
    weighs the same), under the model as it is."""
    model, device, total, tokens = context.model, model_device(context.model), 0.0, 0
    model.eval()
    for start in range(0, len(pairs), context.batch_size):
        chunk = pairs[start:start + context.batch_size]
        batch = make_batch([p for p, _ in chunk], [t for _, t in chunk], context.tokenizer.pad_token_id).to(device)
        total += float(target_nll(model(**batch.model_inputs()).logits, batch.labels).sum())
        tokens += sum(len(t) for _, t in chunk)
    return total / tokens


# init=False: step 0 already holds the clean answers to its own requests (no INIT rows to generate)
@ATTACKS.register("harmful_ft", SCHEMA, needs=("train_records", "harmful_ft_records"), shared=("harmful_ft_holdout",),
                  init=False)
def attack_harmful_ft(context: AttackContext, settings: dict) -> pd.DataFrame:
    forbidden, benign = context.eval_records["eval_forbidden"], context.eval_records["eval_benign"]
    if len(benign) < len(forbidden):
        raise ValueError(f"harmful_ft: {len(forbidden)} forbidden prompts but only {len(benign)} benign ones to pair "
                         "them with")
    benign = benign[:len(forbidden)]  # paired by index (a forbidden_split may hold fewer than eval_benign)
    eval_records = forbidden + benign
    eval_ids = context.prompt_ids(eval_records)
    frames = []
    # step 0's answers: every run starts from the same weights and decoding draws nothing from the run's
    # seed (greedy, or Gumbel noise hashed from the prompt and step), so one generation serves all runs
    untrained: list[str] = []
    for data in settings["data"]:
        records, trained = harmful_pairs(held_out_records(context, settings["harmful_ft_holdout"]), data,
                                         settings["ood_categories"], settings["max_pairs"])
        pairs = [fit_to_length(prompt_token_ids(context.tokenizer, r["prompt"], context.chat_template),
                               target_token_ids(context.tokenizer, r["harmful_response"], eos=True),
                               settings["max_length"]) for r in records]
        nll_step0 = completion_nll(context, pairs)
        read_on = f"eval prompts outside {sorted(trained)}" if data == "ood" and trained else "every eval prompt"
        log.info("harmful_ft %s: %d pairs (categories %s), compliance read on %s; NLL of their completions at "
                 "step 0: %.4f", data, len(pairs), sorted({r["category"] for r in records}), read_on, nll_step0)
        for seed in settings["seeds"]:
            def probe(step: int) -> None:
                if step == 0 and untrained:
                    texts = untrained
                else:
                    texts = context.generate(eval_ids, desc=f"harmful_ft {data} seed {seed} step {step}")
                    if step == 0:
                        untrained.extend(texts)
                frame = generations_frame(eval_records, texts, layer=-1, strength=float(step), direction=seed)
                frame["ft_data"] = data
                frame["nll_step0"] = nll_step0
                frame["trained_category"] = [data == "in_dist" or r["category"] in trained for r in eval_records]
                frame["pair_id"] = [r["id"] for r in forbidden] * 2
                frames.append(frame)
            finetune_and_probe(context, training_pairs(pairs, settings["loss_tokens"]), settings, seed, probe,
                               f"harmful_ft {data} seed {seed}")
    return pd.concat(frames, ignore_index=True)

"""Token layout shared by training, probes, attacks and generation.

Every batch puts prompts left-padded to a common length P, followed by targets right-padded:
``[pad… prompt | target …pad]``. So every row's prompt ends at P (the hooks' ``prompt_end``),
generation continues at P, and teacher-forced scoring of a target sees exactly the positions
generation would.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


# Chat templates pinned: Llama-3.1/3.2's template writes "Today Date: <the day it runs>" into its system
# block (through transformers' strftime_now) unless ``date_string`` is given, so the same prompt would
# tokenize differently from day to day. The date below is the template's own fallback ("26 Jul 2024").
PINNED_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool = True,
                     system: str | None = None) -> list[int]:
    """Token ids of one user prompt, ready for the assistant's answer: the user turn alone (no system
    message of ours; a template's own default system block stays, with its date pinned), or after a
    ``system`` turn of ours (a defense that trains under one: targeted LAT's public code)."""
    if system is not None and not (chat_template and tokenizer.chat_template):
        raise ValueError("a system prompt needs the chat template (generation.chat_template: true and a "
                         "tokenizer that has one)")
    if chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **PINNED_TEMPLATE_KWARGS)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def conversation_token_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a whole chat (``{role, content}`` messages, every turn) in the tokenizer's chat
    template, as RepBend's public code formats UltraChat's conversations for its KL term."""
    if not tokenizer.chat_template:
        raise ValueError("a conversation needs the chat template (a tokenizer that has one)")
    text = tokenizer.apply_chat_template(messages, tokenize=False, **PINNED_TEMPLATE_KWARGS)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def longest_prompt(tokenizer: PreTrainedTokenizerBase, records: list[dict], chat_template: bool = True) -> int:
    """Token length of the longest ``prompt`` in ``records`` (what a batch row is sized for)."""
    return max(len(prompt_token_ids(tokenizer, r["prompt"], chat_template)) for r in records)


def target_token_ids(tokenizer: PreTrainedTokenizerBase, target: str, eos: bool = False) -> list[int]:
    ids = tokenizer(target, add_special_tokens=False)["input_ids"] if target else []
    return ids + [tokenizer.eos_token_id] if eos else ids


@dataclass
class Batch:
    input_ids: torch.Tensor       # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    position_ids: torch.Tensor    # [B, P + T], counting real tokens only
    labels: torch.Tensor          # [B, P + T], -100 except target tokens
    prompt_end: torch.Tensor      # [B], = P

    def to(self, device) -> "Batch":
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}


def make_batch(prompts: list[list[int]], targets: list[list[int]] | None, pad_id: int) -> Batch:
    """Left-pad prompts, right-pad targets (none: prompts only, as for generation)."""
    targets = targets if targets is not None else [[] for _ in prompts]
    p_len = max(len(p) for p in prompts)
    t_len = max(len(t) for t in targets)
    rows, masks, labels = [], [], []
    for prompt, target in zip(prompts, targets):
        left, right = p_len - len(prompt), t_len - len(target)
        rows.append([pad_id] * left + prompt + target + [pad_id] * right)
        masks.append([0] * left + [1] * (len(prompt) + len(target)) + [0] * right)
        labels.append([-100] * p_len + target + [-100] * right)
    attention_mask = torch.tensor(masks)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(torch.tensor(rows), attention_mask, position_ids, torch.tensor(labels),
                 torch.full((len(prompts),), p_len))


def label_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, T − 1] log p(y_t | x, y_<t) of each next token, [B, T − 1] True where that token is
    labelled) for ``labels`` aligned with the inputs (−100: unlabelled); shifted here."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gold = labels[:, 1:]
    mask = gold != -100
    return logp.gather(-1, gold.clamp(min=0)[..., None])[..., 0], mask


def target_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row summed negative log-likelihood of the labelled tokens: -Σ_t log p(y_t | x, y_<t)."""
    picked, mask = label_log_probs(logits, labels)
    return -(picked * mask).sum(-1)

"""A word-level tokenizer for the toy world, built offline and saved as a Hugging Face tokenizer."""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
ROLE_TOKENS = ["<user>", "<assistant>"]

# One user turn, then the assistant. Matches how real chat models are prompted, so the
# same prompt-building code serves the organism and hub models.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<user> {{ message['content'] }} "
    "{% else %}<assistant> {{ message['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def build_tokenizer(words: set[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` plus special and role tokens, with a chat template."""
    specials = list(SPECIAL_TOKENS.values()) + ROLE_TOKENS
    vocab = {token: i for i, token in enumerate(specials + sorted(words - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS,
                                        additional_special_tokens=ROLE_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"  # generation pads prompts on the left
    return tokenizer

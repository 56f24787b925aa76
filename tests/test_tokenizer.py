from transformers import AutoTokenizer

from latentaudit.batching import make_batch, prompt_token_ids, target_token_ids


def test_round_trip_of_every_text(tokenizer, splits):
    for records in splits.values():
        for r in records[:50]:
            for text in (r["prompt"], r["response"]):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                assert tokenizer.unk_token_id not in ids
                assert tokenizer.decode(ids) == text


def test_chat_template_and_save_load(tokenizer, tmp_path):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "what is 2 plus 3 ?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<s><user> what is 2 plus 3 ? <assistant>"
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert prompt_token_ids(loaded, "what is 2 plus 3 ?") == prompt_token_ids(tokenizer, "what is 2 plus 3 ?")
    assert loaded.decode(prompt_token_ids(loaded, "spell the word cat ."), skip_special_tokens=True) == \
        "spell the word cat ."


def test_batch_layout_left_pads_prompts_and_right_pads_targets(tokenizer):
    prompts = [prompt_token_ids(tokenizer, "what is 2 plus 3 ?"), prompt_token_ids(tokenizer, "spell the word cat .")]
    targets = [target_token_ids(tokenizer, "2 plus 3 is 5 .", eos=True), target_token_ids(tokenizer, "cat")]
    batch = make_batch(prompts, targets, tokenizer.pad_token_id)
    p = max(map(len, prompts))
    assert batch.prompt_end.tolist() == [p, p]
    assert batch.input_ids[0, p - len(prompts[0]):p].tolist() == prompts[0]
    assert batch.labels[0, p:p + len(targets[0])].tolist() == targets[0]
    assert (batch.labels[:, :p] == -100).all() and batch.labels[1, p + 1:].eq(-100).all()
    # positions count real tokens only, so left padding does not shift them
    assert batch.position_ids[1, p - len(prompts[1])] == 0

from sp_core.tiny import build_tiny_tokenizer


def test_tokenizer_is_deterministic_and_llama_like(tiny_tokenizer):
    assert build_tiny_tokenizer().get_vocab() == tiny_tokenizer.get_vocab()
    ids = tiny_tokenizer("USER: <image>\nWhat colour? ASSISTANT: red</s>").input_ids
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.convert_tokens_to_ids("<image>")) == 1
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.image_token == "<image>"
    assert tiny_tokenizer.pad_token == tiny_tokenizer.unk_token  # LLaVA pads with <unk>


def test_any_text_encodes_without_unknown_tokens_and_round_trips(tiny_tokenizer):
    text = "Zebra café №42 — ünïcode & punctuation!?"
    ids = tiny_tokenizer(text, add_special_tokens=False).input_ids
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == text

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


def test_a_smaller_image_size_gives_a_smaller_grid_and_a_matching_processor(tmp_path):
    import json

    import pytest

    from sp_core.tiny import build_tiny_model, save_tiny_model

    model, _ = build_tiny_model(image_size=112, sp_variant="cropping", sp_num_tokens=4, sp_dfi_kernel=4)
    assert model.config.vision_config.image_size == 112
    assert model.config.image_tokens_per_image == 8 * 8 + 4  # the 8 x 8 patch grid and 4 spatial tokens
    directory = save_tiny_model(tmp_path / "m", image_size=112, sp_variant="none")
    processor = json.loads((directory / "processor_config.json").read_text())["image_processor"]
    assert processor["crop_size"] == {"height": 112, "width": 112}
    with pytest.raises(ValueError, match="image_size=100 must be a positive multiple of the patch size 14"):
        build_tiny_model(image_size=100)
    with pytest.raises(ValueError, match="sp_num_tokens=6 is not possible for sp_variant='cropping' on a 8x8 grid"):
        build_tiny_model(image_size=112, sp_variant="cropping")

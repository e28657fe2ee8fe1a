import pytest

from sp_core.conversation import (
    IGNORE_INDEX,
    PLAIN,
    VICUNA_V1,
    ConversationError,
    get_template,
    inference_prompt,
    tokenize_conversation,
)

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
TWO_ROUNDS = [
    {"from": "human", "value": "What colour is the circle?\n<image>"},
    {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "How many shapes?"},
    {"from": "gpt", "value": "two"},
]


def _learned_tokens(tokenizer, result):
    return [tokenizer.convert_ids_to_tokens(t) for t, label in zip(result.input_ids, result.labels)
            if label != IGNORE_INDEX]


def test_vicuna_v1_prompt_is_the_official_two_style_format(tiny_tokenizer):
    result = tokenize_conversation(TWO_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 3, 2048)
    # <image> moved to the front of its turn, as LLaVA's preprocess_multimodal does.
    assert result.prompt == (f"{SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT: Red.</s>"
                             "USER: How many shapes? ASSISTANT: two</s>")


def test_vicuna_v1_learns_only_the_answers_and_their_eos(tiny_tokenizer):
    result = tokenize_conversation(TWO_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 3, 2048)
    assert _learned_tokens(tiny_tokenizer, result) == ["R", "e", "d", ".", "</s>", "Ġtwo", "</s>"]
    assert result.input_ids[0] == tiny_tokenizer.bos_token_id and result.labels[0] == IGNORE_INDEX
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert result.input_ids.count(image_id) == 3  # expanded to the model's placeholder count
    assert all(label == IGNORE_INDEX for token, label in zip(result.input_ids, result.labels) if token == image_id)
    # Learned labels are the tokens themselves (the model shifts them).
    assert all(label == token for token, label in zip(result.input_ids, result.labels) if label != IGNORE_INDEX)
    # Same ids as tokenizing the rendered prompt in one go (what inference sees), modulo image expansion.
    whole = tiny_tokenizer(result.prompt).input_ids
    collapsed = [t for i, t in enumerate(result.input_ids) if not (t == image_id and result.input_ids[i - 1] == image_id)]
    assert collapsed == whole


def test_plain_drops_the_instruction_and_learns_caption_and_newline(tiny_tokenizer):
    turns = [{"from": "human", "value": "<image>\nDescribe the image briefly."}, {"from": "gpt", "value": "a red circle"}]
    result = tokenize_conversation(turns, tiny_tokenizer, PLAIN, True, 3, 2048)
    assert result.prompt == "<image>a red circle\n"
    tokens = tiny_tokenizer.convert_ids_to_tokens(result.input_ids)
    assert tokens == ["<s>", "<image>", "<image>", "<image>", "a", "Ġre", "d", "Ġcircle", "Ċ"]
    assert [label != IGNORE_INDEX for label in result.labels] == [False] * 4 + [True] * 5


def test_text_only_sample_has_no_image_tokens(tiny_tokenizer):
    turns = [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "blue"}]
    result = tokenize_conversation(turns, tiny_tokenizer, VICUNA_V1, False, 582, 2048)
    assert tiny_tokenizer.convert_tokens_to_ids("<image>") not in result.input_ids
    assert _learned_tokens(tiny_tokenizer, result) == ["Ġblue", "</s>"]


@pytest.mark.parametrize(
    "turns, has_image, reason",
    [
        ([], True, "no_conversations"),
        (None, True, "no_conversations"),
        ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "<image>\nq"}], True, "roles_not_alternating"),
        ([{"from": "human", "value": "<image>\nq"}, {"from": "human", "value": "again"}], True, "roles_not_alternating"),
        ([{"from": "human", "value": "<image>\nq"}], True, "roles_not_alternating"),
        ([{"from": "human", "value": "what?"}, {"from": "gpt", "value": "x"}], True, "image_token_missing"),
        ([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "x"}], False, "image_token_without_image"),
        ([{"from": "human", "value": "<image>\n<image>\nq"}, {"from": "gpt", "value": "x"}], True, "too_many_image_tokens"),
        ([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "   "}], True, "empty_text"),
        ([{"from": "human", "value": ""}, {"from": "gpt", "value": "x"}], False, "empty_text"),
        ([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": 3}], True, "turn_not_text"),
    ],
)
def test_bad_conversations_raise_with_a_reason(tiny_tokenizer, turns, has_image, reason):
    with pytest.raises(ConversationError) as error:
        tokenize_conversation(turns, tiny_tokenizer, VICUNA_V1, has_image, 3, 2048)
    assert error.value.reason == reason


def test_truncation_keeps_the_image_whole_and_fails_when_no_answer_is_left(tiny_tokenizer):
    full = tokenize_conversation(TWO_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 10, 2048)
    first_answer_end = [i for i, t in enumerate(full.input_ids) if t == tiny_tokenizer.eos_token_id][0] + 1
    truncated = tokenize_conversation(TWO_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 10, first_answer_end)
    assert truncated.input_ids == full.input_ids[:first_answer_end]
    assert _learned_tokens(tiny_tokenizer, truncated) == ["R", "e", "d", ".", "</s>"]
    image_start = full.input_ids.index(tiny_tokenizer.convert_tokens_to_ids("<image>"))
    with pytest.raises(ConversationError) as error:  # the cut falls inside the image: no answer is left
        tokenize_conversation(TWO_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 10, image_start + 4)
    assert error.value.reason == "no_learnable_tokens"


def test_inference_prompts():
    assert inference_prompt(VICUNA_V1, "What colour?", True) == f"{SYSTEM} USER: <image>\nWhat colour? ASSISTANT:"
    assert inference_prompt(VICUNA_V1, "<image>\nWhat colour?", True) == f"{SYSTEM} USER: <image>\nWhat colour? ASSISTANT:"
    assert inference_prompt(VICUNA_V1, "Hi", False) == f"{SYSTEM} USER: Hi ASSISTANT:"
    assert inference_prompt(PLAIN, "ignored", True) == "<image>"


def test_unknown_template_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: plain, vicuna_v1"):
        get_template("llava_v0")


def _official_vicuna_v1_prompt(turns: list[dict]) -> str:
    """LLaVA's preprocess_multimodal + conv_vicuna_v1.get_prompt (SeparatorStyle.TWO), restated: only a turn that
    holds <image> is stripped; every other value goes in as it is."""
    messages = []
    for turn in turns:
        value = turn["value"]
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        messages.append(value)
    prompt = SYSTEM + " "
    for index, message in enumerate(messages):
        prompt += ("USER", "ASSISTANT")[index % 2] + ": " + message + (" ", "</s>")[index % 2]
    return prompt


SPACED_ROUNDS = [
    {"from": "human", "value": "  <image>\n What colour is the circle?  "},
    {"from": "gpt", "value": " Red. "},
    {"from": "human", "value": "How many shapes?\n"},
    {"from": "gpt", "value": "two\n\n"},
]


def test_whitespace_outside_the_image_turn_is_kept_as_the_official_code_keeps_it(tiny_tokenizer):
    result = tokenize_conversation(SPACED_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 1, 2048)
    assert result.prompt == _official_vicuna_v1_prompt(SPACED_ROUNDS)
    assert "ASSISTANT:  Red. </s>" in result.prompt and "ASSISTANT: two\n\n</s>" in result.prompt
    assert result.input_ids == tiny_tokenizer(result.prompt).input_ids  # one image token: no expansion
    stripped = tokenize_conversation(SPACED_ROUNDS, tiny_tokenizer, VICUNA_V1, True, 1, 2048, strip_turns=True)
    assert "ASSISTANT: Red.</s>USER: How many shapes? ASSISTANT: two</s>" in stripped.prompt
    assert stripped.input_ids != result.input_ids


def test_a_bare_image_turn_is_just_the_image_token(tiny_tokenizer):
    turns = [{"from": "human", "value": " <image> "}, {"from": "gpt", "value": "a circle"}]
    result = tokenize_conversation(turns, tiny_tokenizer, VICUNA_V1, True, 1, 2048)
    assert result.prompt == _official_vicuna_v1_prompt(turns)
    assert "USER: <image> ASSISTANT:" in result.prompt

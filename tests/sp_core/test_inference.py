import numpy as np
import pytest
import torch
from PIL import Image

from sp_core.conversation import VICUNA_V1, chat_prompt, inference_prompt
from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.inference import (
    FINISH_LENGTH,
    FINISH_STOP,
    IMAGE_COUNT_MISMATCH,
    INVALID_SAMPLING,
    INVALID_TURNS,
    PROMPT_TOO_LONG,
    TOO_MANY_IMAGES,
    GenerationInputError,
    GenerationRequest,
    LlavaSPGenerator,
    SamplingParams,
)
from sp_core.tiny import build_tiny_model


def _image(seed: int, size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _ask(question: str, image_seed: int | None = 0, **sampling) -> GenerationRequest:
    if image_seed is None:
        return GenerationRequest([question], [], SamplingParams(**sampling))
    return GenerationRequest([f"<image>\n{question}"], [_image(image_seed)], SamplingParams(**sampling))


@pytest.fixture(scope="module")
def generator() -> LlavaSPGenerator:
    model, tokenizer = build_tiny_model(seed=0, sp_variant="cropping")
    return LlavaSPGenerator(model, tokenizer, LlavaSPImageProcessor(aspect="pad"))


def test_chat_prompt_is_the_training_layout_with_the_answer_open():
    turns = ["<image>\nWhat colour?", "red", "And the shape?"]
    assert chat_prompt(VICUNA_V1, turns) == (
        f"{VICUNA_V1.system} USER: <image>\nWhat colour? ASSISTANT: red</s>USER: And the shape? ASSISTANT:"
    )
    assert chat_prompt(VICUNA_V1, turns[:1]) == inference_prompt(VICUNA_V1, "What colour?", has_image=True)
    assert chat_prompt(VICUNA_V1, ["hi"], system="Be brief.") == "Be brief. USER: hi ASSISTANT:"


def test_a_batch_gives_each_request_the_tokens_it_gets_alone(generator):
    # Different prompt lengths (with and without an image) force left padding of up to ~600 positions.
    requests = [
        _ask("What colour is the shape?", 0, max_new_tokens=7),
        _ask("Hello", None, max_new_tokens=5),
        _ask("Where is the circle? Answer the question using a single word or phrase.", 1, max_new_tokens=9),
    ]
    batched = generator.generate(requests)
    alone = [generator.generate([request])[0] for request in requests]
    for together, single in zip(batched, alone, strict=True):
        assert together.token_ids == single.token_ids
        assert together.text == single.text
    assert [result.completion_tokens for result in batched] == [7, 5, 9]
    assert [result.finish_reason for result in batched] == [FINISH_LENGTH] * 3
    assert batched[1].prompt_tokens < 60
    assert 582 < batched[0].prompt_tokens < batched[2].prompt_tokens


def test_greedy_matches_transformers_generate(generator):
    request = _ask("Is the square left of the triangle?", 3, max_new_tokens=10)
    ours = generator.generate([request])[0]
    prepared = generator.prepare(request)
    input_ids = torch.tensor([prepared.input_ids])
    reference = generator.model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=prepared.pixel_values,
        max_new_tokens=10, min_new_tokens=10,
    )
    assert ours.token_ids == reference[0, input_ids.shape[1]:].tolist()
    assert ours.prompt_tokens == input_ids.shape[1]
    assert int((input_ids == generator.model.config.image_token_id).sum()) == 582


def test_finished_requests_leave_the_batch(generator):
    before = generator.stats.forwards
    generator.generate([_ask("a", None, max_new_tokens=2), _ask("b", None, max_new_tokens=6)])
    # One prefill, then one forward per further token of the longest request: 1 + 5.
    assert generator.stats.forwards - before == 6


def test_stop_strings_end_the_text_before_them(generator):
    free = generator.generate([_ask("How many shapes are there?", 2, max_new_tokens=12)])[0]
    words = free.text.split()
    assert len(words) >= 3
    stop = words[2]
    stopped = generator.generate([_ask("How many shapes are there?", 2, max_new_tokens=12, stop=(stop, "zzz"))])[0]
    assert stopped.finish_reason == FINISH_STOP
    assert stopped.text == free.text[: free.text.find(stop)].strip()
    assert stop not in stopped.text and stopped.completion_tokens < free.completion_tokens


def test_stream_pieces_join_to_the_generated_text(generator):
    request = _ask("What shape is it?", 4, max_new_tokens=12)
    *pieces, result = list(generator.stream(request))
    assert len(pieces) >= 3
    assert "".join(pieces) == result.text == generator.generate([request])[0].text
    stop_request = _ask("What shape is it?", 4, max_new_tokens=12, stop=(result.text.split()[-1],))
    *pieces, stopped = list(generator.stream(stop_request))
    assert "".join(pieces) == stopped.text and stopped.finish_reason == FINISH_STOP


def test_sampling_is_per_request_and_reproducible_with_a_seed(generator):
    greedy = _ask("What colour is the shape?", 5, max_new_tokens=10)
    hot = _ask("What colour is the shape?", 5, max_new_tokens=10, temperature=1.5, seed=7)
    hot_again = _ask("What colour is the shape?", 5, max_new_tokens=10, temperature=1.5, seed=7)
    nucleus_of_one = _ask("What colour is the shape?", 5, max_new_tokens=10, temperature=1.0, top_p=1e-6, seed=3)
    results = generator.generate([greedy, hot, hot_again, nucleus_of_one])
    assert results[1].token_ids == results[2].token_ids
    assert results[1].token_ids != results[0].token_ids
    assert results[3].token_ids == results[0].token_ids  # top_p that keeps one token is greedy


@pytest.mark.parametrize(
    ("request_", "reason", "fragment"),
    [
        (GenerationRequest(["<image>\n<image>\nboth?"], [_image(0), _image(1)]), TOO_MANY_IMAGES, "at most 1"),
        (GenerationRequest(["no marker"], [_image(0)]), IMAGE_COUNT_MISMATCH, "0 '<image>' markers for 1 images"),
        (GenerationRequest(["<image>\nmarker only"], []), IMAGE_COUNT_MISMATCH, "1 '<image>' markers for 0"),
        (GenerationRequest(["q", "a"]), INVALID_TURNS, "end with a user turn"),
        (GenerationRequest(["q"], sampling=SamplingParams(max_new_tokens=0)), INVALID_SAMPLING, "positive integer"),
        (GenerationRequest(["q"], sampling=SamplingParams(top_p=0)), INVALID_SAMPLING, "top_p must be in (0, 1]"),
        (GenerationRequest(["q"], sampling=SamplingParams(stop=("",))), INVALID_SAMPLING, "non-empty"),
        (GenerationRequest(["<image>\nq"], [_image(0)], SamplingParams(max_new_tokens=1500)), PROMPT_TOO_LONG,
         "the context is 2048 tokens"),
        (GenerationRequest(["word " * 3000]), PROMPT_TOO_LONG, "shorten the chat"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(generator, request_, reason, fragment):
    with pytest.raises(GenerationInputError) as error:
        generator.prepare(request_)
    assert error.value.reason == reason
    assert fragment in str(error.value)


def test_from_pretrained_uses_the_saved_processor_settings(tiny_model_dir):
    generator = LlavaSPGenerator.from_pretrained(tiny_model_dir)
    assert generator.image_processor.image_size == 336 and generator.image_processor.aspect == "pad"
    result = generator.generate([_ask("What colour is the shape?", 0, max_new_tokens=3)])[0]
    assert result.completion_tokens == 3 and result.prompt_tokens > 582

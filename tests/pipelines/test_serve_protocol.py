"""The chat-completions wire format without a server: every client mistake is a 400 naming the parameter at fault,
and what the server sends parses as the openai package's own types."""

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from pipelines.serve.protocol import (
    APIError,
    ChatLimits,
    chunk_body,
    completion_body,
    parse_chat_request,
    sse,
)
from sp_core.generation_types import GenerationResult

LIMITS = ChatLimits(max_tokens_limit=64, default_max_tokens=16, max_images_per_request=1)
IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def _chat(content="Where is the circle?", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def _refusal(body) -> APIError:
    with pytest.raises(APIError) as caught:
        parse_chat_request(body if isinstance(body, (bytes, str)) else json.dumps(body), LIMITS)
    assert caught.value.status == 400
    return caught.value


def test_a_valid_chat_becomes_the_turns_images_and_sampling_of_the_model():
    body = {"model": "m", "temperature": 0.7, "top_p": 0.9, "seed": 2**63 - 1, "stop": "###", "max_tokens": 8,
            "stream": True, "stream_options": {"include_usage": True}, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE_PART]},
                {"role": "assistant", "content": "A circle."},
                {"role": "user", "content": "Where?"}]}
    call = parse_chat_request(json.dumps(body), LIMITS)
    assert call.turns == ["<image>\nWhat is it?", "A circle.", "Where?"]
    assert call.image_urls == [IMAGE_PART["image_url"]["url"]] and call.system == "Be brief."
    sampling = call.sampling
    assert (sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.stop, sampling.seed) == (
        8, 0.7, 0.9, ("###",), 2**63 - 1)
    assert call.stream and call.include_usage


def test_unset_and_null_parameters_take_the_defaults_and_no_op_values_are_accepted():
    nulls = {"temperature": None, "top_p": None, "n": None, "stream": None, "stop": None, "seed": None}
    no_ops = {"logprobs": False, "presence_penalty": 0, "response_format": {"type": "text"}, "n": 1}
    for extra in ({}, nulls, no_ops):
        sampling = parse_chat_request(json.dumps(_chat(**extra)), LIMITS).sampling
        assert (sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.stop) == (16, 0.0, 1.0, ())
    assert parse_chat_request(json.dumps(_chat(temperature=1e-40)), LIMITS).sampling.temperature == 1e-40
    assert parse_chat_request(json.dumps(_chat("emoji \ud83d\ude00")), LIMITS).turns == ["emoji \U0001F600"]


@pytest.mark.parametrize(("body", "code", "param", "fragment"), [
    (_chat(seed=2**64), "invalid_seed", "seed", "less than or equal to 9223372036854775807"),
    (_chat(seed=True), "invalid_seed", "seed", "valid integer"),
    (_chat(temperature="1"), "invalid_temperature", "temperature", "valid number, got '1'"),
    (_chat(top_p=0), "invalid_top_p", "top_p", "greater than 0"),
    (_chat(max_tokens=65), "invalid_max_tokens", "max_tokens", "[1, 64], got 65"),
    (_chat(max_completion_tokens=0), "invalid_max_tokens", "max_completion_tokens", "[1, 64], got 0"),
    (_chat(n=2), "invalid_n", "n", "Input should be 1"),
    (_chat(logprobs=True), "unsupported_parameter", "logprobs", "logprobs=True is not supported"),
    (_chat(presence_penalty=0.5), "unsupported_parameter", "presence_penalty", "only 0 or None"),
    (_chat(response_format={"type": "json_object"}), "unsupported_parameter", "response_format", "json_object"),
    (_chat(best_of=2), "unknown_parameter", "best_of", "Extra inputs are not permitted"),
    (_chat(stop=["a", "b", "c", "d", "e"]), "invalid_stop", "stop", "at most 4 items"),
    (_chat(stop=""), "invalid_stop", "stop", "at least 1 character"),
    ({"model": "m"}, "missing_messages", "messages", "Field required"),
    ({"model": "m", "messages": []}, "invalid_messages", "messages", "at least 1 item"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "missing_model", "model", "Field required"),
    (_chat(5), "invalid_messages", "messages.0.content", "valid string, got 5"),
    (_chat([]), "invalid_messages", "messages.0.content", "at least 1 item"),
    (_chat([{"type": "audio"}]), "invalid_messages", "messages.0.content.0.type", "'text' or 'image_url'"),
    (_chat([{"type": "image_url", "image_url": {"url": ""}}]), "invalid_messages",
     "messages.0.content.0.image_url.url", "at least 1 character"),
    (_chat([{"type": "text"}]), "invalid_content", "messages.0.content.0", "a part is"),
    (_chat([{"type": "image_url"}]), "invalid_content", "messages.0.content.0", "a part is"),
    (_chat([{**IMAGE_PART, "text": "hi"}]), "invalid_content", "messages.0.content.0", "a part is"),
    (_chat([IMAGE_PART, IMAGE_PART]), "too_many_images", "messages", "at most 1 per chat"),
    (_chat("<image> sneaky"), "reserved_token", "messages.0.content", "reserved token <image>"),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "invalid_message", "messages", "last message must be from the user"),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "invalid_message", "messages", "messages[1].role is 'user', expected 'assistant'"),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                 {"role": "user", "content": "c"}]}, "invalid_message", "messages", "messages[1]"),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [IMAGE_PART]},
                                 {"role": "user", "content": "c"}]}, "invalid_content", "messages",
     "images are only accepted in user messages"),
    ({"model": "m", "messages": [{"role": "tool", "content": "a"}]}, "invalid_messages", "messages.0.role",
     "'system', 'developer', 'user' or 'assistant'"),
])
def test_a_client_mistake_is_a_400_naming_the_parameter(body, code, param, fragment):
    error = _refusal(body)
    assert (error.code, error.param) == (code, param) and fragment in error.message, error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"model": "m", "messages": [', "EOF while parsing"),
    (b"[1, 2]", "must be a JSON object"),
    (b'\xef\xbb\xbf{"model": "m"}', "line 1 column 1"),  # a byte order mark
    ('{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
])
def test_a_body_that_is_not_a_json_object_is_a_400_that_does_not_echo_it(raw, fragment):
    error = _refusal(raw)
    assert error.code == "invalid_json" and fragment in error.message
    assert '"model"' not in error.message


def test_responses_are_the_openai_types():
    call = parse_chat_request(json.dumps(_chat()), LIMITS)
    result = GenerationResult(text="Top left.", token_ids=[1, 2, 3], prompt_tokens=20, completion_tokens=4,
                              finish_reason="stop")
    completion = ChatCompletion.model_validate(completion_body(call, result))
    assert completion.choices[0].message.content == "Top left." and completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        20, 4, 24)
    events = [sse(chunk_body(call, ChoiceDelta(role="assistant", content=""))),
              sse(chunk_body(call, ChoiceDelta(content="Top left."))),
              sse(chunk_body(call, finish_reason="stop")), sse(chunk_body(call, result=result))]
    chunks = [ChatCompletionChunk.model_validate_json(event.removeprefix("data: ")) for event in events]
    assert all(event.endswith("\n\n") for event in events)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:3]) == "Top left."
    assert chunks[2].choices[0].finish_reason == "stop" and chunks[3].choices == []
    assert chunks[3].usage.completion_tokens == 4 and chunks[0].id == call.request_id
    assert json.loads(events[1].removeprefix("data: "))["choices"][0]["finish_reason"] is None  # sent, as null

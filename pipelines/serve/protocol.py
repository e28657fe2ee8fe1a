"""The OpenAI chat-completions wire format: request validation -> a ChatCall, results -> response / chunk bodies.

Pure functions (no Ray, no model), so every bad-request rule is unit-tested and the Serve ingress stays thin. A bad
request raises APIError, which carries the HTTP status and the OpenAI error body: {"error": {"message", "type",
"param", "code"}}. Images are only collected here (as their URLs); decoding them is images.py's job.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sp_core.conversation import IMAGE
from sp_core.generation_types import SEED_RANGE
from sp_core.inference import GenerationResult, SamplingParams

MAX_STOP_STRINGS = 4  # OpenAI's limit
SUPPORTED_PARAMETERS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                        "seed", "n", "stream", "stream_options", "user"}
# OpenAI parameters this server does not implement, with the values that ask for nothing beyond what it does.
NO_OP_VALUES: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, None), "presence_penalty": (0, None), "logprobs": (False, None),
    "top_logprobs": (0, None), "response_format": ({"type": "text"}, None), "logit_bias": ({}, None),
    "tools": ([], None), "tool_choice": ("none", None), "parallel_tool_calls": (True, False, None),
}


class APIError(Exception):
    """An error answer: status, OpenAI error type and code, the parameter at fault, and a message saying the fix."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 error_type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


def bad_request(message: str, code: str, param: str | None = None) -> APIError:
    return APIError(400, message, code, param)


@dataclass
class ChatLimits:
    max_tokens_limit: int = 1024
    default_max_tokens: int = 128
    max_images_per_request: int = 1


@dataclass
class ChatCall:
    """A validated request: the chat as alternating user/assistant texts with <image> markers, and its images."""

    model: str
    turns: list[str]
    image_urls: list[str]  # one per <image> marker, in order
    sampling: SamplingParams
    system: str | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with token counts
    request_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON: {error}", "invalid_json") from error
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}", "invalid_json")
    return body


def parse_chat_request(body: dict[str, Any], limits: ChatLimits) -> ChatCall:
    """Validate an OpenAI chat request body; raises APIError naming the first problem."""
    _check_parameters(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: one of the names GET /v1/models lists", "missing_model", "model")
    n = body.get("n", 1)
    if n != 1:
        raise bad_request(f"only n=1 is supported, got n={n!r}", "unsupported_n", "n")
    system, turns, image_urls = _parse_messages(body.get("messages"))
    if len(image_urls) > limits.max_images_per_request:
        raise bad_request(
            f"{len(image_urls)} images in the request, but the template supports at most "
            f"{limits.max_images_per_request} per chat", "too_many_images", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(f"'stream' must be true or false, got {stream!r}", "invalid_stream", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise bad_request("'stream_options' must be an object", "invalid_stream_options", "stream_options")
    return ChatCall(
        model=model,
        turns=turns,
        image_urls=image_urls,
        sampling=_parse_sampling(body, limits),
        system=system,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
    )


def _parse_messages(messages: Any) -> tuple[str | None, list[str], list[str]]:
    """messages -> (system text, user/assistant texts with <image> markers, image URLs)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", "missing_messages",
                          "messages")
    system = None
    turns: list[str] = []
    image_urls: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", "invalid_message", where)
        role = message.get("role")
        if role in ("system", "developer"):
            if turns or system is not None:
                raise bad_request(f"{where}: one system message, before the chat, is supported", "invalid_message",
                                  where)
            system, images = _parse_content(message.get("content"), where, allow_images=False)
            continue
        expected = ("user", "assistant")[len(turns) % 2]
        if role != expected:
            raise bad_request(f"{where}.role is {role!r}, expected {expected!r}: user and assistant turns alternate, "
                              "starting with the user", "invalid_message", f"{where}.role")
        text, images = _parse_content(message.get("content"), where, allow_images=role == "user")
        # LLaVA puts the image first in its turn ("<image>\ntext"), as in training.
        turns.append("".join(f"{IMAGE}\n" for _ in images) + text)
        image_urls.extend(images)
    if not turns or len(turns) % 2 == 0:
        raise bad_request("the last message must be from the user", "invalid_message", "messages")
    return system, turns, image_urls


def _parse_content(content: Any, where: str, allow_images: bool) -> tuple[str, list[str]]:
    """A message's content (a string or a list of text / image_url parts) -> (text, image URLs)."""
    if isinstance(content, str):
        return _checked_text(content, where), []
    if not isinstance(content, list) or not content:
        raise bad_request(f"{where}.content must be a string or a non-empty list of parts", "invalid_content",
                          f"{where}.content")
    texts, images = [], []
    for part_index, part in enumerate(content):
        part_where = f"{where}.content[{part_index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(_checked_text(part["text"], part_where))
        elif kind == "image_url":
            if not allow_images:
                raise bad_request(f"{part_where}: images are only accepted in user messages", "invalid_content",
                                  part_where)
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str) or not url:
                raise bad_request(f"{part_where}.image_url.url must be a data: or http(s) URL string",
                                  "invalid_image_url", part_where)
            images.append(url)
        else:
            raise bad_request(f"{part_where}: unsupported part {kind!r}; use {{'type': 'text', 'text': ...}} or "
                              "{'type': 'image_url', 'image_url': {'url': ...}}", "invalid_content", part_where)
    return "\n".join(texts).strip(), images


def _check_parameters(body: dict[str, Any]) -> None:
    """Parameters this server does not implement are refused (as OpenAI refuses unknown ones), not ignored; each
    is accepted only at its no-op value, which some clients send by default."""
    unknown = sorted(key for key in body if key not in SUPPORTED_PARAMETERS and key not in NO_OP_VALUES)
    if unknown:
        raise bad_request(f"unrecognized request argument(s): {', '.join(unknown)}", "unknown_parameter",
                          unknown[0])
    for name, no_ops in NO_OP_VALUES.items():
        if name in body and body[name] not in no_ops:
            raise bad_request(f"{name}={body[name]!r} is not supported by this server (only "
                              f"{' or '.join(map(repr, no_ops))})", "unsupported_parameter", name)


def _checked_text(text: str, where: str) -> str:
    if IMAGE in text:
        raise bad_request(f"{where}: the text contains the reserved token {IMAGE}; send images as image_url parts",
                          "reserved_token", where)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # JSON's \ud800 escapes decode to lone surrogates, which no tokenizer takes
        raise bad_request(f"{where}: the text holds a lone surrogate ({text[error.start]!r} at character "
                          f"{error.start}), which is not valid Unicode", "invalid_text", where) from None
    return text


def _parse_sampling(body: dict[str, Any], limits: ChatLimits) -> SamplingParams:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_tokens_limit:
        raise bad_request(f"max_tokens must be an integer in [1, {limits.max_tokens_limit}], got {max_tokens!r}",
                          "invalid_max_tokens", "max_tokens")
    # Greedy unless asked (OpenAI's default is 1.0): LLaVA is evaluated greedily and answers are then reproducible.
    temperature = _number(body, "temperature", 0.0, low=0.0, high=2.0)
    top_p = _number(body, "top_p", 1.0, low=0.0, high=1.0, low_open=True)
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
        raise bad_request(f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS}, got {stop!r}",
                          "invalid_stop", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise bad_request(f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {seed!r}",
                          "invalid_seed", "seed")
    return SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stops),
                          seed=seed)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not valid or value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise bad_request(f"{name} must be a number in {interval}, got {value!r}", f"invalid_{name}", name)
    return float(value)


# ----------------------------------------------------------------------------------------------------------------
# Responses


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def completion_body(call: ChatCall, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": call.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": result.finish_reason, "logprobs": None}],
        "usage": usage(result),
    }


def chunk_body(call: ChatCall, delta: dict[str, str], finish_reason: str | None = None,
               result: GenerationResult | None = None) -> dict[str, Any]:
    """One server-sent chunk; with `result` and no delta it is the usage-only last chunk (choices empty)."""
    choices = [] if result is not None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                              "logprobs": None}]
    body: dict[str, Any] = {"id": call.request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": call.model, "choices": choices}
    if result is not None:
        body["usage"] = usage(result)
    return body


def sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"

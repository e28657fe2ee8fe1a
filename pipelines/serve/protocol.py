"""The OpenAI chat-completions wire format: a request body -> a ChatCall, results -> response and chunk bodies.

Requests are validated by pydantic models of the part of the API this server implements (strict types, unknown
parameters refused); responses are the openai package's own types. Pure functions (no Ray, no model), so every
bad-request rule is unit-tested and the Serve ingress stays thin. A bad request raises APIError, which carries the
HTTP status and the OpenAI error body: {"error": {"message", "type", "param", "code"}}. Images are only collected
here (as their URLs); decoding them is images.py's job.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sp_core.conversation import IMAGE
from sp_core.generation_types import SEED_RANGE
from sp_core.inference import GenerationResult, SamplingParams

MAX_STOP_STRINGS = 4  # OpenAI's limit
# OpenAI parameters this server does not implement, with the values that ask for nothing beyond what it does (some
# clients send them by default); any other value is refused rather than ignored.
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


# ----------------------------------------------------------------------------------------------------------------
# Request models


class _Strict(BaseModel):
    # Strict: "1" is not a number and true is not 1; unknown fields are refused, as OpenAI refuses them.
    model_config = ConfigDict(strict=True, extra="forbid")


class ImageURL(_Strict):
    url: str = Field(min_length=1)  # a data: URL, or http(s) where the server allows remote images
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ContentPart:
        text_part = self.text is not None and self.image_url is None
        image_part = self.image_url is not None and self.text is None
        if not (text_part if self.type == "text" else image_part):
            raise PydanticCustomError("invalid_content", "a part is {{'type': 'text', 'text': ...}} or "
                                      "{{'type': 'image_url', 'image_url': {{'url': ...}}}}")
        return self


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[ContentPart], Field(min_length=1)]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content: str | list[ContentPart]) -> str | list[ContentPart]:
        for text in [content] if isinstance(content, str) else [part.text for part in content if part.text]:
            if IMAGE in text:
                raise PydanticCustomError("reserved_token", f"the text contains the reserved token {IMAGE}; send "
                                          "images as image_url parts")
        return content

    @property
    def image_urls(self) -> list[str]:
        return [] if isinstance(self.content, str) else [part.image_url.url for part in self.content
                                                          if part.image_url is not None]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text is not None).strip()


class StreamOptions(_Strict):
    include_usage: bool = False


StopString = Annotated[str, Field(min_length=1)]


class ChatCompletionRequest(_Strict):
    """The request body of POST /v1/chat/completions, as far as this server implements it."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Greedy unless asked (OpenAI's default is 1.0): LLaVA is evaluated greedily and answers are then reproducible.
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: Literal[1] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    logit_bias: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None

    @field_validator(*NO_OP_VALUES)
    @classmethod
    def _no_op(cls, value: Any, info: ValidationInfo) -> Any:
        allowed = NO_OP_VALUES[info.field_name]
        if value not in allowed:
            raise PydanticCustomError("unsupported_parameter", f"{info.field_name}={value!r} is not supported by this "
                                      f"server (only {' or '.join(map(repr, allowed))})")
        return value

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _within_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _limits(info).max_tokens_limit
        if value is not None and not 1 <= value <= limit:
            raise PydanticCustomError("invalid_max_tokens", f"must be in [1, {limit}], got {value}")
        return value

    @field_validator("messages")
    @classmethod
    def _a_chat(cls, messages: list[Message], info: ValidationInfo) -> list[Message]:
        """One system message first at most, then user and assistant turns alternating, ending with the user;
        images only from the user, and no more than the template takes."""
        first = 1 if messages[0].role in ("system", "developer") else 0
        for index, message in enumerate(messages[first:], start=first):
            expected = ("user", "assistant")[(index - first) % 2]
            if message.role != expected:
                raise PydanticCustomError("invalid_message", f"messages[{index}].role is {message.role!r}, expected "
                                          f"{expected!r}: one system message first at most, then user and assistant "
                                          "turns alternating, starting with the user")
        for index, message in enumerate(messages):
            if message.image_urls and message.role != "user":
                raise PydanticCustomError("invalid_content", f"messages[{index}]: images are only accepted in user "
                                          "messages")
        if messages[-1].role != "user":
            raise PydanticCustomError("invalid_message", "the last message must be from the user")
        images = sum(len(message.image_urls) for message in messages)
        limit = _limits(info).max_images_per_request
        if images > limit:
            raise PydanticCustomError("too_many_images", f"{images} images in the request, but the template "
                                      f"supports at most {limit} per chat")
        return messages


def _limits(info: ValidationInfo) -> ChatLimits:
    return (info.context or {}).get("limits") or ChatLimits()


# ----------------------------------------------------------------------------------------------------------------
# Request -> ChatCall


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


def parse_chat_request(raw: bytes | str, limits: ChatLimits) -> ChatCall:
    """Validate a request body (JSON text); raises APIError naming the first problem."""
    try:
        request = ChatCompletionRequest.model_validate_json(raw, context={"limits": limits})
    except ValidationError as error:
        raise _api_error(error) from None
    has_system = request.messages[0].role in ("system", "developer")
    chat = request.messages[1:] if has_system else request.messages
    max_tokens = request.max_completion_tokens or request.max_tokens or limits.default_max_tokens
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    return ChatCall(
        model=request.model,
        # LLaVA puts the image first in its turn ("<image>\ntext"), as in training.
        turns=["".join(f"{IMAGE}\n" for _ in message.image_urls) + message.text for message in chat],
        image_urls=[url for message in chat for url in message.image_urls],
        sampling=SamplingParams(max_new_tokens=max_tokens, temperature=_or(request.temperature, 0.0),
                                top_p=_or(request.top_p, 1.0), stop=tuple(stops), seed=request.seed),
        system=request.messages[0].text if has_system else None,
        stream=bool(request.stream),
        include_usage=request.stream_options is not None and request.stream_options.include_usage,
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _api_error(error: ValidationError) -> APIError:
    """The 400 for a body that failed validation: the most specific problem, naming the parameter at fault."""
    problems = error.errors(include_url=False)
    if problems[0]["type"] in ("json_invalid", "model_type"):  # the body itself; never echo it back
        reason = problems[0]["msg"] if problems[0]["type"] == "json_invalid" else "it must be a JSON object"
        if "escape" in reason:
            reason += " (a \\u escape must be valid Unicode: a lone surrogate such as \\ud800 is not)"
        return bad_request(f"the request body is not valid JSON: {reason}", "invalid_json")
    paths = [_path(problem["loc"]) for problem in problems]
    deepest = max(len(path) for path in paths)
    chosen = [problem for problem, path in zip(problems, paths) if len(path) == deepest]
    path = _path(chosen[0]["loc"])
    param = ".".join(str(part) for part in path) or None
    message = " or ".join(dict.fromkeys(_message(problem) for problem in chosen))
    return bad_request(f"{param}: {message}" if param else message, _code(chosen[0], path), param)


# The error types of the validators above: each is the error's code, and its message says all.
OWN_ERRORS = ("unsupported_parameter", "invalid_max_tokens", "invalid_message", "invalid_content", "reserved_token",
              "too_many_images")
UNION_LABEL = re.compile(r"^(str|int|float|bool)$|[\[-]")  # pydantic's names of union members in a location


def _path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The location without pydantic's labels of union members (e.g. 'str', 'list[ContentPart]')."""
    return tuple(part for part in loc if isinstance(part, int) or not UNION_LABEL.search(part))


def _message(problem: dict[str, Any]) -> str:
    message = problem["msg"]
    if problem["type"] in (*OWN_ERRORS, "missing", "extra_forbidden") or isinstance(problem.get("input"),
                                                                                   (list, dict)):
        return message
    shown = repr(problem.get("input"))
    return f"{message}, got {shown[:80] + '...' if len(shown) > 80 else shown}"


def _code(problem: dict[str, Any], path: tuple[int | str, ...]) -> str:
    kind, name = problem["type"], path[0] if path else "request"
    if kind in OWN_ERRORS:
        return kind
    if kind == "missing":
        return f"missing_{name}"
    if kind == "extra_forbidden":
        return "unknown_parameter"
    return f"invalid_{name}"


# ----------------------------------------------------------------------------------------------------------------
# Responses


def usage(result: GenerationResult) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           total_tokens=result.prompt_tokens + result.completion_tokens)


def completion_body(call: ChatCall, result: GenerationResult) -> dict[str, Any]:
    completion = ChatCompletion(
        id=call.request_id, object="chat.completion", created=int(time.time()), model=call.model,
        choices=[Choice(index=0, message=ChatCompletionMessage(role="assistant", content=result.text),
                        finish_reason=result.finish_reason, logprobs=None)],
        usage=usage(result))
    return completion.model_dump(exclude_unset=True)


def chunk_body(call: ChatCall, delta: ChoiceDelta | None = None, finish_reason: str | None = None,
               result: GenerationResult | None = None) -> ChatCompletionChunk:
    """One streamed chunk: a delta, or the finish reason; with `result` it is the usage-only last chunk (no
    choices), as OpenAI sends it for stream_options.include_usage."""
    choices = [] if result is not None else [ChunkChoice(index=0, delta=delta or ChoiceDelta(),
                                                         finish_reason=finish_reason, logprobs=None)]
    extra = {"usage": usage(result)} if result is not None else {}
    return ChatCompletionChunk(id=call.request_id, object="chat.completion.chunk", created=int(time.time()),
                               model=call.model, choices=choices, **extra)


def sse(body: ChatCompletionChunk | dict[str, Any] | str) -> str:
    """One server-sent event."""
    if isinstance(body, BaseModel):
        data = body.model_dump_json(exclude_unset=True)
    else:
        data = body if isinstance(body, str) else json.dumps(body)
    return f"data: {data}\n\n"

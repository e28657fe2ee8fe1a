"""Answering benchmark questions through an OpenAI-compatible endpoint: the project's own Serve app, or any server
that speaks the chat completions API with image parts (vLLM serving llava-hf's LLaVA-1.5, for example).

Each question is one chat: a user message holding the question's image as a data URL (the file's own bytes, which
the server decodes and preprocesses as it was configured to) and the question's text; greedy decoding
(temperature 0) and the benchmark's max_tokens. The `openai` client retries 408/409/429/5xx responses and connection
errors with exponential backoff (honouring Retry-After) up to `max_retries` times; the retries are counted, and a
question that still gets no answer is recorded with its reason, never dropped.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from PIL import Image, UnidentifiedImageError


class EndpointError(RuntimeError):
    """The endpoint cannot be used at all: unreachable, the key refused, or the model not served."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # up to and including /v1, e.g. http://127.0.0.1:8000/v1
    model: str  # the name the endpoint serves the model under
    api_key: str = ""
    max_retries: int = 5
    timeout_s: float = 600.0

    def client(self, http_client: httpx.Client | None = None) -> openai.OpenAI:
        # The openai client insists on a key; servers without authentication ignore whatever is sent.
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "no-key", max_retries=self.max_retries,
                             timeout=self.timeout_s, http_client=http_client)


def api_key(key_file: str, key_env: str, where: str) -> str:
    """The key from a file (a mounted secret) or else from the environment variable named key_env; "" for none."""
    if key_file:
        key = Path(key_file).read_text().strip()
        if not key:
            raise EndpointError(f"{where}: api_key_file={key_file} is empty")
        return key
    if key_env:
        if not os.environ.get(key_env):
            raise EndpointError(f"{where}: api_key_env={key_env}, but ${key_env} is not set")
        return os.environ[key_env]
    return ""


def check_endpoint(endpoint: Endpoint, where: str) -> None:
    """Before any question: the endpoint answers, accepts the key and serves the model; else one clear error."""
    client = Endpoint(endpoint.base_url, endpoint.model, endpoint.api_key, max_retries=1, timeout_s=30).client()
    try:
        served = [model.id for model in client.models.list()]
    except openai.AuthenticationError as error:
        raise EndpointError(f"{where}: {endpoint.base_url} refused the API key (HTTP 401): {_message(error)}; set "
                            "api_key_file= or api_key_env= to the key it expects") from error
    except openai.PermissionDeniedError as error:
        raise EndpointError(f"{where}: {endpoint.base_url} denied access (HTTP 403): {_message(error)}") from error
    except openai.NotFoundError as error:
        raise EndpointError(f"{where}: {endpoint.base_url}/models does not exist (HTTP 404): endpoint= is the base "
                            "URL of an OpenAI-compatible API, ending in /v1") from error
    except openai.APIConnectionError as error:
        raise EndpointError(f"{where}: cannot reach {endpoint.base_url}: {error.__cause__ or error}") from error
    except openai.APIStatusError as error:
        raise EndpointError(f"{where}: {endpoint.base_url}/models answered HTTP {error.status_code}: "
                            f"{_message(error)}") from error
    if endpoint.model not in served:
        raise EndpointError(f"{where}: {endpoint.base_url} does not serve a model named {endpoint.model!r}; it "
                            f"serves: {', '.join(served) or 'nothing'} (set served_model= to one of them)")


def _message(error: openai.APIStatusError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("error", body)
    return str(inner.get("message", error.message)) if isinstance(inner, dict) else str(error.message)


def image_data_url(data: bytes) -> str:
    """The image file's own bytes as a data URL, its type read from the bytes; ValueError if it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = Image.MIME.get(image.format or "", "")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"not an image Pillow can read: {error}") from error
    if not kind:
        raise ValueError("an image of a format without a MIME type")
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


class EndpointPredictor:
    """A Ray Data callable class: a batch of questions -> answers from the endpoint, up to `concurrency` in flight.

    Output columns as the actor path's (key, text, error), plus retries (the attempts beyond the first)."""

    def __init__(self, endpoint: dict[str, Any], image_root: str, concurrency: int):
        self.endpoint = Endpoint(**endpoint)
        self.image_root = Path(image_root)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="endpoint")
        self._attempts = threading.local()  # httpx calls its hooks in the thread that sends the request
        self.client = self.endpoint.client(httpx.Client(event_hooks={"request": [self._count_attempt]}))

    def _count_attempt(self, request: httpx.Request) -> None:
        self._attempts.count = getattr(self._attempts, "count", 0) + 1

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        outcomes = list(self.pool.map(lambda row: self._answer(batch, row), range(len(batch["key"]))))
        return {"key": list(batch["key"]), "text": [text for text, _, _ in outcomes],
                "error": [error for _, error, _ in outcomes], "retries": [retries for _, _, retries in outcomes]}

    def _answer(self, batch: dict[str, np.ndarray], row: int) -> tuple[str, str, int]:
        """(text, error, retries) of one question; error is "" when it was answered."""
        self._attempts.count = 0
        try:
            messages = [{"role": "user", "content": self._content(batch, row)}]
        except (OSError, ValueError) as error:
            return "", f"{type(error).__name__}: {error}", 0
        try:
            completion = self.client.chat.completions.create(
                model=self.endpoint.model, messages=messages, temperature=0.0,
                max_tokens=int(batch["max_new_tokens"][row]))
            text, error = completion.choices[0].message.content or "", ""
        except openai.APIStatusError as failure:
            text, error = "", f"HTTP {failure.status_code}: {_message(failure)}"
        except openai.APIConnectionError as failure:  # timeouts included
            text, error = "", f"{type(failure).__name__}: {failure.__cause__ or failure}"
        return text, error, max(0, self._attempts.count - 1)

    def _content(self, batch: dict[str, np.ndarray], row: int) -> list[dict[str, Any]]:
        prompt = str(batch["prompt"][row])
        image_bytes, image_path = batch["image_bytes"][row], batch["image"][row]
        data = bytes(image_bytes) if image_bytes is not None and len(image_bytes) else None
        if data is None and image_path:
            data = (self.image_root / str(image_path)).read_bytes()
        parts: list[dict[str, Any]] = []
        if data is not None:
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(data)}})
        return [*parts, {"type": "text", "text": prompt}]

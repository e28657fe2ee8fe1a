"""The GPT judge of LLaVA-Bench and MM-Vet: any OpenAI-compatible chat-completions endpoint, off by default.

Judging costs money and sends answers to a third party, so nothing is called unless a URL is configured:

    export LLAVA_SP_JUDGE_URL=https://api.openai.com/v1    # or a local vLLM / Ray Serve OpenAI-compatible server
    export LLAVA_SP_JUDGE_MODEL=gpt-4-0613                  # the paper's judge (the default)
    export OPENAI_API_KEY=...                               # sent as a bearer token when set

A `Judge` is anything with `complete(messages, temperature=, max_tokens=) -> str`, so tests and other back ends
plug in without the network. httpx is imported only when the HTTP judge is used (it is a dev extra).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

URL_ENV, MODEL_ENV, KEY_ENV = "LLAVA_SP_JUDGE_URL", "LLAVA_SP_JUDGE_MODEL", "OPENAI_API_KEY"
DEFAULT_MODEL = "gpt-4-0613"  # the paper judged LLaVA-Bench and MM-Vet with GPT-4-0613
RETRYABLE_STATUS = (408, 409, 429, 500, 502, 503, 504)

Messages = list[dict[str, str]]


class JudgeNotConfiguredError(ValueError):
    """A GPT-judged benchmark was scored with no judge configured."""


class JudgeError(RuntimeError):
    """The judge endpoint kept failing or answered in an unexpected shape."""


class Judge(Protocol):
    def complete(self, messages: Messages, *, temperature: float, max_tokens: int) -> str: ...


@dataclass(frozen=True)
class JudgeConfig:
    url: str  # base URL of an OpenAI-compatible API; /chat/completions is appended
    model: str = DEFAULT_MODEL
    api_key: str | None = None  # bearer token; None sends no Authorization header (local servers)
    timeout_s: float = 120.0
    max_attempts: int = 5  # per request, on timeouts, connection errors and retryable statuses
    backoff_s: float = 2.0  # doubled after every failed attempt

    @classmethod
    def from_env(cls) -> JudgeConfig | None:
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            return None
        return cls(url=url, model=os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL,
                   api_key=os.environ.get(KEY_ENV) or None)


class OpenAICompatibleJudge:
    """POST {url}/chat/completions with httpx; `transport` lets tests answer without a network."""

    def __init__(self, config: JudgeConfig, transport: Any = None) -> None:
        self.config = config
        self.transport = transport

    def complete(self, messages: Messages, *, temperature: float, max_tokens: int) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        body = {"model": self.config.model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens}
        url = self.config.url.rstrip("/") + "/chat/completions"
        delay = self.config.backoff_s
        with httpx.Client(timeout=self.config.timeout_s, transport=self.transport) as client:
            for attempt in range(1, self.config.max_attempts + 1):
                try:
                    response = client.post(url, json=body, headers=headers)
                except httpx.TransportError as error:
                    problem = f"{type(error).__name__}: {error}"
                else:
                    if response.status_code == 200:
                        return _content(response.json(), url)
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    if response.status_code not in RETRYABLE_STATUS:
                        raise JudgeError(f"judge {url} refused the request ({problem})")
                if attempt < self.config.max_attempts:
                    logger.warning("judge attempt %d/%d failed (%s); retrying in %.1f s", attempt,
                                   self.config.max_attempts, problem, delay)
                    time.sleep(delay)
                    delay *= 2
        raise JudgeError(f"judge {url} failed {self.config.max_attempts} times; last: {problem}")


def _content(payload: Any, url: str) -> str:
    try:
        return str(payload["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"judge {url} answered without choices[0].message.content: {str(payload)[:200]}") from None


def configured_judge(judge: Judge | None, benchmark: str) -> Judge:
    """The given judge, else one from the environment, else a clear error saying how to enable it."""
    if judge is not None:
        return judge
    config = JudgeConfig.from_env()
    if config is None:
        raise JudgeNotConfiguredError(
            f"{benchmark} is scored by a GPT judge, which is off by default; set {URL_ENV} to an OpenAI-compatible "
            f"API (e.g. https://api.openai.com/v1), optionally {MODEL_ENV} (default {DEFAULT_MODEL}) and "
            f"{KEY_ENV}, then score again")
    return OpenAICompatibleJudge(config)

"""The data of a generation request and its result, shared by the generator, the engine and the servers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

SEED_RANGE = (-(2**63), 2**63 - 1)  # OpenAI's seed is an int64
FINISH_STOP = "stop"  # end of sequence or a stop string
FINISH_LENGTH = "length"  # max_new_tokens or the context length

# Reasons a request is refused before it reaches the model; Serve maps them to 4xx answers.
TOO_MANY_IMAGES = "too_many_images"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
PROMPT_TOO_LONG = "prompt_too_long"
INVALID_SAMPLING = "invalid_sampling"
INVALID_TURNS = "invalid_turns"


class GenerationInputError(ValueError):
    """A request the generator cannot run; `reason` is one of the constants above, the message says how to fix it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept when sampling
    stop: tuple[str, ...] = ()  # the text ends before the first of these; they are not returned
    seed: int | None = None  # sampling seed; None draws one
    ignore_eos: bool = False  # run to max_new_tokens (benchmarks compare equal lengths)

    def problems(self) -> list[str]:
        found = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            found.append(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not 0 <= self.temperature <= 2:
            found.append(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            found.append(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not isinstance(stop, str) or not stop for stop in self.stop):
            found.append(f"stop strings must be non-empty strings, got {list(self.stop)}")
        if self.seed is not None and not (isinstance(self.seed, int) and SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            found.append(f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] (int64), got {self.seed!r}")
        return found


@dataclass
class GenerationRequest:
    """A chat: user/assistant texts alternating, ending with the user's; each image is one "<image>" in the text."""

    turns: list[str]
    images: list[Image.Image] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None  # replaces the template's system prompt


@dataclass
class PreparedRequest:
    """A validated request as model inputs; preparing is separate so a server can reject bad input before batching."""

    input_ids: list[int]  # <image> expanded to image_tokens_per_image placeholders
    pixel_values: torch.Tensor | None  # (n_images, 3, S, S)
    sampling: SamplingParams

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # FINISH_STOP | FINISH_LENGTH


@dataclass
class GenerationStats:
    """Counters since the generator was built: a batching test compares forwards with requests."""

    batches: int = 0  # prefill batches (requests admitted together)
    requests: int = 0
    forwards: int = 0  # model forward passes: prefills and decode steps
    completion_tokens: int = 0
    largest_batch: int = 0  # the most requests one decode step served

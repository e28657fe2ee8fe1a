"""Batched generation for LLaVA-SP: the one generation path of the Serve endpoint and the batch evaluation.

Many (images, chat) requests run in one forward per step: prompts are left-padded, the attention mask hides the
padding and the position ids count real tokens only, so a request gets the same tokens alone or in a batch. Each
request keeps its own max_new_tokens, temperature, top_p, stop strings and seed; greedy is the default, as in
LLaVA's evaluation scripts. The scheduling is sp_core/engine.py's continuous batching: a finished request leaves
the batch at once, so a long answer does not make short ones pay for its steps. `generate` and `stream` run that
engine in the caller's thread; a server runs one in a thread of its own and submits to it.

We run our own decode loop rather than `model.generate` because generate applies one temperature / top_p / length
to the whole batch and cannot take new requests into a running batch; the per-step work (one forward, a per-row
choice of the next token) is the same.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from sp_core.conversation import IMAGE, chat_prompt, expand_image_tokens, get_template
from sp_core.engine import DONE, ERROR, TEXT, UNLIMITED, EngineEvent, GenerationEngine
from sp_core.generation_types import (
    FINISH_LENGTH,
    FINISH_STOP,
    IMAGE_COUNT_MISMATCH,
    INVALID_SAMPLING,
    INVALID_TURNS,
    PROMPT_TOO_LONG,
    TOO_MANY_IMAGES,
    GenerationInputError,
    GenerationRequest,
    GenerationResult,
    GenerationStats,
    PreparedRequest,
    SamplingParams,
)
from sp_core.image_options import (
    DEFAULT_ASPECT,
    DEFAULT_RESIZE,
    AspectMode,
    ResizeBackend,
)
from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.loading import load_llava_sp
from sp_core.modeling import LlavaSPForConditionalGeneration


class LlavaSPGenerator:
    """Chat requests -> text with a LLaVA-SP model; one forward per step for a whole batch."""

    def __init__(
        self,
        model: LlavaSPForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: LlavaSPImageProcessor,
        template: str = "vicuna_v1",
        max_images: int = 1,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = get_template(template)
        # LLaVA-1.5 is trained with one image per conversation; more would be out of distribution.
        self.max_images = max_images
        self.stats = GenerationStats()
        self._lock = threading.Lock()  # one decode loop at a time: the model is not re-entrant
        config = model.config
        self.image_token_id = config.image_token_id
        self._image_tokens = config.image_tokens_per_image
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        self._longest_token_chars = max((len(token) for token in tokenizer.get_vocab()), default=1)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        aspect: AspectMode = DEFAULT_ASPECT,
        template: str = "vicuna_v1",
        max_images: int = 1,
        resize: ResizeBackend = DEFAULT_RESIZE,
    ) -> LlavaSPGenerator:
        """From a model directory (safetensors); images are prepared as in training ("pad" = LLaVA-1.5's default)."""
        model, processor = load_llava_sp(path, dtype=dtype, device=device)
        image_processor = LlavaSPImageProcessor.from_pretrained_dir(path, aspect=aspect, resize=resize)
        return cls(model, processor.tokenizer, image_processor, template=template, max_images=max_images)

    @property
    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    # ------------------------------------------------------------------------------------------------------------
    # Requests -> model inputs

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Validate and tokenize; raises GenerationInputError naming the problem."""
        problems = request.sampling.problems()
        if problems:
            raise GenerationInputError(INVALID_SAMPLING, "; ".join(problems))
        if not request.turns or len(request.turns) % 2 == 0:
            raise GenerationInputError(
                INVALID_TURNS, f"turns must alternate user/assistant and end with a user turn, got {len(request.turns)}"
            )
        markers = sum(text.count(IMAGE) for text in request.turns)
        if len(request.images) > self.max_images:
            raise GenerationInputError(
                TOO_MANY_IMAGES, f"{len(request.images)} images, but this model takes at most {self.max_images} per chat"
            )
        if markers != len(request.images):
            raise GenerationInputError(
                IMAGE_COUNT_MISMATCH, f"the text holds {markers} '{IMAGE}' markers for {len(request.images)} images"
            )
        prompt = chat_prompt(self.template, request.turns, system=request.system)
        # No token covers more characters than the longest vocabulary entry: a prompt longer than that many times
        # the context is refused before it is tokenised (an 8 MB prompt would tie up the tokenizer for seconds).
        if len(prompt) > self.context_length * self._longest_token_chars:
            raise GenerationInputError(
                PROMPT_TOO_LONG, f"the context is {self.context_length} tokens, but the prompt has {len(prompt)} "
                f"characters, more than {self.context_length} tokens can hold; shorten the chat")
        token_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        input_ids = expand_image_tokens(token_ids, self.image_token_id, self._image_tokens)
        needed = len(input_ids) + request.sampling.max_new_tokens
        if needed > self.context_length:
            raise GenerationInputError(
                PROMPT_TOO_LONG,
                f"the context is {self.context_length} tokens, but the prompt takes {len(input_ids)} (with "
                f"{self._image_tokens} per image) and max_new_tokens asks for {request.sampling.max_new_tokens} more; "
                "shorten the chat or lower max_new_tokens",
            )
        pixel_values = self.image_processor(request.images) if request.images else None
        return PreparedRequest(input_ids, pixel_values, request.sampling)

    # ------------------------------------------------------------------------------------------------------------
    # Generation

    def generate(self, requests: Sequence[GenerationRequest | PreparedRequest]) -> list[GenerationResult]:
        """All requests batched by the engine, in this thread; results in request order. Raises GenerationError
        naming the requests whose own generation failed (the others still ran to the end)."""
        if not requests:
            return []
        prepared = [self._prepared(request) for request in requests]
        events: list[list[EngineEvent]] = [[] for _ in prepared]
        with self._lock:
            engine = GenerationEngine(self, UNLIMITED)
            for index, request in enumerate(prepared):
                engine.submit(request, events[index].append, streams=False)
            engine.run_until_idle()
        ends = [next(event for event in reversed(heard) if event.kind in (DONE, ERROR)) for heard in events]
        failed = {index: end.text for index, end in enumerate(ends) if end.kind == ERROR}
        if failed:
            raise GenerationError(failed)
        return [end.result for end in ends]

    def stream(self, request: GenerationRequest | PreparedRequest) -> Iterator[str | GenerationResult]:
        """Text pieces as they are decoded, then the GenerationResult; the pieces join to result.text."""
        prepared = self._prepared(request)
        heard: deque[EngineEvent] = deque()
        with self._lock:
            engine = GenerationEngine(self, UNLIMITED)
            engine.submit(prepared, heard.append)
            while engine.step() or heard:
                while heard:
                    event = heard.popleft()
                    if event.kind == ERROR:
                        raise GenerationError({0: event.text})
                    yield event.text if event.kind == TEXT else event.result

    def _prepared(self, request: GenerationRequest | PreparedRequest) -> PreparedRequest:
        return request if isinstance(request, PreparedRequest) else self.prepare(request)


class GenerationError(RuntimeError):
    """Requests whose own generation failed: request index -> what went wrong."""

    def __init__(self, failures: dict[int, str]):
        super().__init__("; ".join(f"request {index}: {message}" for index, message in sorted(failures.items())))
        self.failures = failures


def _eos_ids(model: LlavaSPForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


__all__ = [
    "FINISH_LENGTH",
    "FINISH_STOP",
    "IMAGE_COUNT_MISMATCH",
    "INVALID_SAMPLING",
    "INVALID_TURNS",
    "PROMPT_TOO_LONG",
    "TOO_MANY_IMAGES",
    "GenerationError",
    "GenerationInputError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStats",
    "LlavaSPGenerator",
    "PreparedRequest",
    "SamplingParams",
]

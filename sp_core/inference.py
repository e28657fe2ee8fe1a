"""Batched generation for LLaVA-SP: the one generation path of the Serve endpoint and the batch evaluation.

Many (images, chat) requests run in one forward per step: prompts are left-padded, the attention mask hides the
padding and the position ids count real tokens only, so a request gets the same tokens alone or in a batch. Each
request keeps its own max_new_tokens, temperature, top_p, stop strings and seed; greedy is the default, as in
LLaVA's evaluation scripts. A finished request leaves the batch (its rows are dropped from the KV cache), so a
long answer does not make short ones pay for its steps. `stream` runs the same loop for one request and yields
text as it is decoded.

We run our own decode loop rather than `model.generate` because generate applies one temperature / top_p / length
to the whole batch; the per-step work (one forward, a per-row choice of the next token) is the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from sp_core.conversation import IMAGE, chat_prompt, expand_image_tokens, get_template
from sp_core.image_processing import DEFAULT_ASPECT, DEFAULT_RESIZE, AspectMode, LlavaSPImageProcessor, ResizeBackend
from sp_core.loading import load_llava_sp
from sp_core.modeling import CACHE_KEYWORD, LlavaSPForConditionalGeneration

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

    batches: int = 0  # calls of the decode loop
    requests: int = 0
    forwards: int = 0  # model forward passes (1 prefill + 1 per further step, per batch)
    completion_tokens: int = 0


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
        self._image_token_id = config.image_token_id
        self._image_tokens = config.image_tokens_per_image
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._eos_ids = _eos_ids(model, tokenizer)

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
        token_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        input_ids = expand_image_tokens(token_ids, self._image_token_id, self._image_tokens)
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
        """All requests in one batch; results in request order."""
        if not requests:
            return []
        prepared = [self._prepared(request) for request in requests]
        with self._lock:
            rows = None
            for rows in self._decode(prepared):
                pass
        return [row.result() for row in rows]

    def stream(self, request: GenerationRequest | PreparedRequest) -> Iterator[str | GenerationResult]:
        """Text pieces as they are decoded, then the GenerationResult; the pieces join to result.text."""
        prepared = self._prepared(request)
        with self._lock:
            row = None
            for rows in self._decode([prepared]):
                row = rows[0]
                piece = row.take_delta()
                if piece:
                    yield piece
        piece = row.take_delta()
        if piece:
            yield piece
        yield row.result()

    def _prepared(self, request: GenerationRequest | PreparedRequest) -> PreparedRequest:
        return request if isinstance(request, PreparedRequest) else self.prepare(request)

    @torch.inference_mode()
    def _decode(self, batch: list[PreparedRequest]) -> Iterator[list[_Row]]:
        """The decode loop; yields every row's state after each step (finished rows included)."""
        device = self.model.device
        rows = [_Row(request, self) for request in batch]
        input_ids, attention_mask = _left_pad([request.input_ids for request in batch], self._pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # padding does not advance positions
        images = [request.pixel_values for request in batch if request.pixel_values is not None]
        pixel_values = torch.cat(images).to(device=device, dtype=self.model.dtype) if images else None
        self.stats.batches += 1
        self.stats.requests += len(batch)

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats.forwards += 1
        cache = getattr(outputs, CACHE_KEYWORD)
        active = list(range(len(rows)))  # batch position -> row index; the cache follows this order
        next_positions = position_ids[:, -1] + 1
        while True:
            logits = outputs.logits[:, -1, :].float()  # (B_active, V)
            logits[:, self._image_token_id] = float("-inf")  # the placeholder is never an answer
            tokens = _choose_tokens(logits, [rows[index] for index in active])
            keep = [position for position, index in enumerate(active) if not rows[index].add(tokens[position])]
            self.stats.completion_tokens += len(active)
            yield rows
            if not keep:
                return
            if len(keep) < len(active):
                kept = torch.tensor(keep, device=device)
                cache.batch_select_indices(kept)
                attention_mask, next_positions, tokens = attention_mask[kept], next_positions[kept], tokens[kept]
                active = [active[position] for position in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
            outputs = self.model(
                input_ids=tokens[:, None].to(device),
                attention_mask=attention_mask,
                position_ids=next_positions[:, None],
                use_cache=True,
                **{CACHE_KEYWORD: cache},
            )
            self.stats.forwards += 1
            cache = getattr(outputs, CACHE_KEYWORD)
            next_positions = next_positions + 1


class _Row:
    """One request's progress: its tokens, text, finish reason, and how much text a stream has taken."""

    def __init__(self, request: PreparedRequest, generator: LlavaSPGenerator):
        self.request = request
        self.sampling = request.sampling
        self.tokenizer = generator.tokenizer
        self.eos_ids = generator._eos_ids
        self.context_left = generator.context_length - request.prompt_tokens
        self.token_ids: list[int] = []  # without the end-of-sequence token
        self.generated = 0  # tokens the model produced, end of sequence included (usage counts these)
        self.text = ""
        self.finish_reason: str | None = None
        self.emitted = 0
        seed = self.sampling.seed if self.sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.random = torch.Generator().manual_seed(seed)

    def add(self, token_id: int) -> bool:
        """Take the next token; True when the request is finished."""
        token_id = int(token_id)
        self.generated += 1
        if token_id in self.eos_ids and not self.sampling.ignore_eos:
            self.finish_reason = FINISH_STOP
            return True
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cut = min((index for index in (text.find(stop) for stop in self.sampling.stop) if index >= 0), default=-1)
        if cut >= 0:
            self.text, self.finish_reason = text[:cut], FINISH_STOP
            return True
        self.text = text
        if self.generated >= min(self.sampling.max_new_tokens, self.context_left):
            self.finish_reason = FINISH_LENGTH
            return True
        return False

    @property
    def final_text(self) -> str:
        # LLaVA strips the answer (the template puts a space after "ASSISTANT:").
        return self.text.strip()

    def take_delta(self) -> str:
        """The text not yet streamed, holding back what may still change: a partial UTF-8 character, trailing
        whitespace (stripped at the end), or a tail that could be the start of a stop string."""
        if self.finish_reason is not None:
            visible = self.final_text
        else:
            visible = self.text.lstrip()
            visible = visible[: len(visible) - _stop_prefix_length(visible, self.sampling.stop)].rstrip()
            if visible.endswith("\ufffd"):
                visible = visible[:-1].rstrip()
        delta = visible[self.emitted :]
        self.emitted = max(self.emitted, len(visible))
        return delta

    def result(self) -> GenerationResult:
        return GenerationResult(
            text=self.final_text,
            token_ids=list(self.token_ids),
            prompt_tokens=self.request.prompt_tokens,
            completion_tokens=self.generated,
            finish_reason=self.finish_reason or FINISH_LENGTH,
        )


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


def _choose_tokens(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens: argmax, or a top-p sample from the row's own generator."""
    tokens = logits.argmax(dim=-1).cpu()
    for position, row in enumerate(rows):
        if row.sampling.temperature > 0:
            tokens[position] = _sample_top_p(logits[position].cpu(), row.sampling, row.random)
    return tokens


def _sample_top_p(logits: torch.Tensor, sampling: SamplingParams, random: torch.Generator) -> int:
    probabilities = torch.softmax(logits / sampling.temperature, dim=-1)
    sorted_probabilities, order = probabilities.sort(descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    outside = sorted_probabilities.cumsum(-1) - sorted_probabilities >= sampling.top_p
    sorted_probabilities[outside] = 0.0
    choice = torch.multinomial(sorted_probabilities, 1, generator=random)
    return int(order[choice])


def _left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the left and the mask of real tokens."""
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, length - len(sequence) :] = 1
    return input_ids, attention_mask


def _eos_ids(model: LlavaSPForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


__all__ = [
    "GenerationInputError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStats",
    "LlavaSPGenerator",
    "PreparedRequest",
    "SamplingParams",
]

"""Continuous batching: requests join the running batch between decode steps and leave it the moment they finish.

A step of `GenerationEngine` (1) drops the rows whose client went away, (2) decodes one token for every running
row in one forward, (3) prefills the waiting requests it admits (as one left-padded batch, at most
`max_prefill_tokens` prompt tokens per step, so a burst of long prompts does not stall the decodes already running)
and joins their KV cache to the running one (sp_core/kv_cache.py). Every row samples with its own settings and
seed, and its text streams out through a listener as it is decoded. A request whose own work fails (its sampling,
its text, its prefill) fails alone: the others in the batch complete, with the tokens they get alone.

The same engine runs the batch evaluation (`LlavaSPGenerator.generate`, stepped in the caller's thread until idle)
and the Serve replicas (stepped in a thread of their own, fed by `submit`).

On a GPU the dynamic cache used here grows by concatenation, one allocation per joining batch and per step. A
server under steady load would keep the same scheduling with a preallocated cache instead: a static cache of
`max_running` rows by the context length, each request owning a row slot (joining = writing its prefill into a free
slot, leaving = freeing it, each row with its own cache position), or paged attention as vLLM does (fixed-size
blocks handed out per request, so memory follows the live tokens rather than the longest row). The scheduling, the
per-row sampling and the listener protocol do not change with the cache.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from sp_core.generation_types import GenerationResult, PreparedRequest
from sp_core.kv_cache import join_rows, keep_rows, trim_left
from sp_core.request_state import RequestState
from sp_core.transformers_compat import CACHE_KEYWORD

if TYPE_CHECKING:
    from sp_core.inference import LlavaSPGenerator

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # how long an idle engine thread sleeps before looking again (a submit wakes it at once)


@dataclass(frozen=True)
class EngineLimits:
    max_running: int = 16  # rows decoded together
    max_prefill_tokens: int = 8192  # prompt tokens prefilled in one step (one longer prompt still runs, alone)
    max_waiting: int = 256  # requests queued before submit refuses more (a server answers 429)

    def problems(self) -> list[str]:
        return [f"{name} must be at least 1, got {getattr(self, name)}"
                for name in ("max_running", "max_prefill_tokens", "max_waiting") if getattr(self, name) < 1]


class EngineFullError(RuntimeError):
    """The waiting queue is full; try again later."""


@dataclass
class EngineEvent:
    """What a listener hears about its request: text as it is decoded, then `done` or `error`, once."""

    kind: str  # "text" | "done" | "error"
    text: str = ""
    result: GenerationResult | None = None


TEXT, DONE, ERROR = "text", "done", "error"


@dataclass(eq=False)
class EngineRequest:
    """A submitted request; `cancel()` (from any thread) makes it leave the batch at the next step. The times
    (time.monotonic) are what a server's latency metrics are made of. A request that does not stream hears only
    its end (`done` or `error`)."""

    prepared: PreparedRequest
    listener: Callable[[EngineEvent], None]
    row: RequestState
    streams: bool = True
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    submitted_at: float = field(default_factory=time.monotonic)
    admitted_at: float | None = None  # its prefill started
    first_token_at: float | None = None
    finished_at: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()


class GenerationEngine:
    """Schedules requests over one model at the granularity of a decode step."""

    def __init__(self, generator: LlavaSPGenerator, limits: EngineLimits | None = None):
        self.generator = generator
        self.model = generator.model
        self.limits = limits or EngineLimits()
        problems = self.limits.problems()
        if problems:
            raise ValueError("EngineLimits: " + "; ".join(problems))
        self._waiting: deque[EngineRequest] = deque()
        self._wakeup = threading.Condition()
        self._running: list[EngineRequest] = []  # in cache row order
        self._cache = None
        self._mask: torch.Tensor | None = None  # (rows, cache length)
        self._positions: torch.Tensor | None = None  # (rows,) position of each row's next token
        self._pending: torch.Tensor | None = None  # (rows,) each row's chosen token, not yet fed to the model
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------------------------------------------------
    # Requests in

    def submit(self, prepared: PreparedRequest, listener: Callable[[EngineEvent], None],
               streams: bool = True) -> EngineRequest:
        """Queue a prepared request; raises EngineFullError when max_waiting requests are already queued."""
        request = EngineRequest(prepared, listener, RequestState(prepared, self.generator), streams)
        with self._wakeup:
            if len(self._waiting) >= self.limits.max_waiting:
                raise EngineFullError(f"{len(self._waiting)} requests are waiting (max_waiting="
                                      f"{self.limits.max_waiting}); try again later")
            self._waiting.append(request)
            self._wakeup.notify()
        return request

    @property
    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        return len(self._running), len(self._waiting)

    # ------------------------------------------------------------------------------------------------------------
    # Stepping

    def step(self) -> bool:
        """One scheduling step; False when there was nothing to do."""
        self._drop(lambda request: request.cancelled.is_set() or request.finished)  # frees their rows first
        admitted = self._admit()
        worked = bool(self._running)
        if self._running:
            self._decode()
        if admitted:
            self._prefill(admitted)
            worked = True
        if self._running and self._mask is not None:
            self._mask = trim_left(self._cache, self._mask)
        return worked

    def run_until_idle(self) -> None:
        """Step until no request is running or waiting (the caller's thread does the work)."""
        while self.step():
            pass

    def start(self) -> None:
        """Step in a daemon thread of its own, sleeping while idle."""
        self._thread = threading.Thread(target=self._loop, name="llava-sp-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with self._wakeup:
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._closed:
            try:
                worked = self.step()
            except Exception:
                logger.exception("a decode step failed; failing the requests in it")
                self._fail_all("generation failed in the model's forward pass")
                worked = True
            if not worked:
                with self._wakeup:
                    if not self._waiting and not self._closed:
                        self._wakeup.wait(IDLE_WAIT_S)

    # ------------------------------------------------------------------------------------------------------------
    # Scheduling

    def _admit(self) -> list[EngineRequest]:
        """Waiting requests that fit this step: free rows, and the prefill token budget (at least one request)."""
        admitted: list[EngineRequest] = []
        budget = self.limits.max_prefill_tokens
        with self._wakeup:
            while self._waiting and len(self._running) + len(admitted) < self.limits.max_running:
                request = self._waiting[0]
                if request.cancelled.is_set():
                    self._waiting.popleft()
                    continue
                if admitted and request.prepared.prompt_tokens > budget:
                    break
                budget -= request.prepared.prompt_tokens
                request.admitted_at = time.monotonic()
                admitted.append(self._waiting.popleft())
        return admitted

    @torch.inference_mode()
    def _decode(self) -> None:
        """Feed every running row its pending token; choose the next ones."""
        device = self.model.device
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        outputs = self.model(input_ids=self._pending[:, None].to(device), attention_mask=mask,
                             position_ids=self._positions[:, None], use_cache=True,
                             **{CACHE_KEYWORD: self._cache})
        stats = self.generator.stats
        stats.forwards += 1
        stats.largest_batch = max(stats.largest_batch, len(self._running))
        self._cache, self._mask, self._positions = getattr(outputs, CACHE_KEYWORD), mask, self._positions + 1
        self._pending = self._take_tokens(self._running, outputs.logits[:, -1, :])

    @torch.inference_mode()
    def _prefill(self, admitted: list[EngineRequest]) -> None:
        """Prefill the admitted requests as one batch and join them to the running ones; if that batch fails, each
        one alone, so that only the request at fault fails."""
        try:
            self._prefill_batch(admitted)
        except Exception as error:  # noqa: BLE001 - isolate the request that caused it
            if len(admitted) == 1:
                self._fail(admitted[0], f"its prefill failed ({type(error).__name__}: {error})")
                return
            for request in admitted:
                self._prefill([request])

    def _prefill_batch(self, admitted: list[EngineRequest]) -> None:
        device, generator = self.model.device, self.generator
        input_ids, mask = left_pad([request.prepared.input_ids for request in admitted], generator.pad_id)
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # padding does not advance positions
        images = [request.prepared.pixel_values for request in admitted if request.prepared.pixel_values is not None]
        pixel_values = torch.cat(images).to(device=device, dtype=self.model.dtype) if images else None
        outputs = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             pixel_values=pixel_values, use_cache=True, logits_to_keep=1)
        generator.stats.forwards += 1
        generator.stats.batches += 1
        generator.stats.requests += len(admitted)
        tokens = self._take_tokens(admitted, outputs.logits[:, -1, :])
        self._cache, self._mask = join_rows(self._cache, self._mask, getattr(outputs, CACHE_KEYWORD), mask)
        self._positions = _joined(self._positions, positions[:, -1] + 1)
        self._pending = _joined(self._pending, tokens)
        self._running.extend(admitted)

    def _take_tokens(self, requests: list[EngineRequest], logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token, given to its request; a request whose own step fails fails alone."""
        logits = logits.float()
        logits[:, self.generator.image_token_id] = float("-inf")  # the placeholder is never an answer
        greedy = logits.argmax(dim=-1).cpu()
        tokens = greedy.clone()
        for position, request in enumerate(requests):
            if request.finished:
                continue
            try:
                tokens[position] = request.row.choose(logits[position], int(greedy[position]))
                done = request.row.add(int(tokens[position]))
                if request.first_token_at is None:
                    request.first_token_at = time.monotonic()
                self.generator.stats.completion_tokens += 1
                text = request.row.take_delta() if request.streams else ""
                if text:
                    self._tell(request, EngineEvent(TEXT, text=text))
                if done:
                    request.finished, request.finished_at = True, time.monotonic()
                    self._tell(request, EngineEvent(DONE, result=request.row.result()))
            except Exception as error:
                logger.exception("request failed in its own decode step")
                self._fail(request, f"generation failed ({type(error).__name__}: {error})")
        return tokens

    # ------------------------------------------------------------------------------------------------------------
    # Leaving

    def _drop(self, leaves: Callable[[EngineRequest], bool]) -> None:
        keep = [index for index, request in enumerate(self._running) if not leaves(request)]
        if len(keep) == len(self._running):
            return
        self._running = [self._running[index] for index in keep]
        if not keep:
            self._cache = self._mask = self._positions = self._pending = None
            return
        self._mask = keep_rows(self._cache, self._mask, keep)
        index = torch.tensor(keep)
        self._positions, self._pending = self._positions[index.to(self._positions.device)], self._pending[index]

    def _fail(self, request: EngineRequest, message: str) -> None:
        request.finished, request.finished_at = True, time.monotonic()
        self._tell(request, EngineEvent(ERROR, text=message))

    def _fail_all(self, message: str) -> None:
        for request in self._running:
            if not request.finished:
                self._fail(request, message)
        self._drop(lambda request: True)

    def _tell(self, request: EngineRequest, event: EngineEvent) -> None:
        try:
            request.listener(event)
        except Exception:
            logger.warning("a request's listener failed; the request leaves the batch", exc_info=True)
            request.cancel()


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the left and the mask of real tokens."""
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, length - len(sequence) :] = 1
    return input_ids, attention_mask



def _joined(running: torch.Tensor | None, joining: torch.Tensor) -> torch.Tensor:
    joining = joining.to(running.device) if running is not None else joining
    return joining if running is None else torch.cat([running, joining])


UNLIMITED = EngineLimits(max_running=sys.maxsize, max_prefill_tokens=sys.maxsize, max_waiting=sys.maxsize)

"""One request's progress through generation: its tokens, its text, its finish, its own sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sp_core.answer_text import AnswerText
from sp_core.generation_types import (
    FINISH_LENGTH,
    FINISH_STOP,
    GenerationResult,
    PreparedRequest,
    SamplingParams,
)

if TYPE_CHECKING:
    from sp_core.inference import LlavaSPGenerator


class RequestState:
    """One request's progress: its tokens, text, finish reason, and how much text a stream has taken."""

    def __init__(self, request: PreparedRequest, generator: LlavaSPGenerator):
        self.request = request
        self.sampling = request.sampling
        self.eos_ids = generator.eos_ids
        self.context_left = generator.context_length - request.prompt_tokens
        self.token_ids: list[int] = []  # without the end-of-sequence token
        self.generated = 0  # tokens the model produced, end of sequence included (usage counts these)
        self.answer = AnswerText(generator.tokenizer, self.sampling.stop)
        self.finish_reason: str | None = None
        self.emitted = 0
        seed = self.sampling.seed if self.sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.random = torch.Generator().manual_seed(seed)

    @property
    def text(self) -> str:
        return self.answer.text

    def choose(self, logits: torch.Tensor, greedy_token: int) -> int:
        """The next token from this row's (V,) logits: the greedy one, or a top-p sample from its own generator."""
        if self.sampling.temperature > 0:
            return _sample_top_p(logits.cpu(), self.sampling, self.random)
        return greedy_token

    def add(self, token_id: int) -> bool:
        """Take the next token; True when the request is finished."""
        token_id = int(token_id)
        self.generated += 1
        if token_id in self.eos_ids and not self.sampling.ignore_eos:
            self.answer.finish(self.token_ids)
            self.finish_reason = FINISH_STOP
            return True
        self.token_ids.append(token_id)
        if self.answer.add(token_id):
            self.finish_reason = FINISH_STOP
            return True
        if self.generated >= min(self.sampling.max_new_tokens, self.context_left):
            self.finish_reason = FINISH_STOP if self.answer.finish(self.token_ids) else FINISH_LENGTH
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


def _sample_top_p(logits: torch.Tensor, sampling: SamplingParams, random: torch.Generator) -> int:
    # The largest logit is subtracted before dividing: a tiny temperature then tends to greedy instead of
    # overflowing to inf - inf = NaN.
    probabilities = torch.softmax((logits - logits.max()) / sampling.temperature, dim=-1)
    sorted_probabilities, order = probabilities.sort(descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    outside = sorted_probabilities.cumsum(-1) - sorted_probabilities >= sampling.top_p
    sorted_probabilities[outside] = 0.0
    choice = torch.multinomial(sorted_probabilities, 1, generator=random)
    return int(order[choice])

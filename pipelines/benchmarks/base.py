"""The contract every evaluation benchmark keeps: what the model is asked, what it writes back, how it is scored.

A benchmark module reads an official question file into `EvalQuestion`s, and scores the answer lines the model
wrote back exactly as the official LLaVA / LLaVA-SP scripts do, so that our numbers can be
compared with the paper's. Answer lines are plain dicts in LLaVA's answer format (`answer_record`), so an answer
file written here can also be fed to the official scripts, and one written by them can be scored here.

Metric scales: every number is on the scale its official script prints. POPE and MMVP are fractions in [0, 1];
VQAv2, TextVQA, VizWiz, GQA, ScienceQA, SEED-Bench, MMBench and MM-Vet are percentages; MME is points (100 per
sub-task and metric, so 200 per sub-task); LLaVA-Bench is the model's score as a percentage of the reference's.
Our own splits (synthetic, RefCOCO) have no official script and report fractions, like the chance numbers that
the synthetic metadata carries. Counts (`questions`, `missing`, ...) are plain integers.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# model_vqa_loader.py's default (VQAv2, GQA, TextVQA, VizWiz, POPE, MME, SEED); the scripts never override it.
LOADER_MAX_NEW_TOKENS = 128
# model_vqa.py, model_vqa_science.py and model_vqa_mmbench.py hard-code this (ScienceQA, MMBench, LLaVA-Bench,
# MM-Vet); MMVP's own evaluate_mllm.py does too.
LONG_MAX_NEW_TOKENS = 1024

# MMBench answer lines carry these next to the common fields (model_vqa_mmbench.py), not inside "metadata".
ROUND_FIELDS = ("round_id", "options", "option_char")


class BenchmarkDataError(ValueError):
    """A question, annotation or answer file that cannot be scored; the message names the file, line and problem."""


@dataclass
class EvalQuestion:
    """One generation request, as the official loader would build it."""

    question_id: str | int  # as in the question file; answer lines repeat it unchanged
    prompt: str  # the user text without "<image>"; suffixes included exactly as the official files/loaders have them
    image: str | None = None  # path relative to the benchmark's image folder; None for text-only or inline images
    image_bytes: bytes | None = None  # encoded image carried in the question file itself (MMBench's base64 column)
    max_new_tokens: int = LOADER_MAX_NEW_TOKENS
    metadata: dict[str, Any] = field(default_factory=dict)  # category, round_id, options, question_type, ...
    # What the official loader writes as the answer line's "prompt" when that differs from `prompt`: ScienceQA
    # records "<image>\n" in front (its IMG-accuracy depends on it), MMBench records the text without its suffix.
    recorded_prompt: str | None = None


def answer_record(question: EvalQuestion, text: str, model_id: str) -> dict[str, Any]:
    """One answer line in LLaVA's format: {question_id, prompt, text, answer_id, model_id, metadata}, plus
    MMBench's round fields when the question has them. `text` is stripped, as the official loaders strip the
    decoded output. answer_id is a uuid4 hex (the official shortuuid only needs to be unique)."""
    record: dict[str, Any] = {
        "question_id": question.question_id,
        "prompt": question.prompt if question.recorded_prompt is None else question.recorded_prompt,
        "text": text.strip(),
    }
    for key in ROUND_FIELDS:
        if key in question.metadata:
            record[key] = question.metadata[key]
    record.update(answer_id=uuid.uuid4().hex, model_id=model_id, metadata={})
    return record


class Benchmark(ABC):
    """One benchmark: its question loader, its scorer and, for server-scored splits, its submission writer."""

    name: str

    def evaluate(self, answers: list[dict[str, Any]], questions_path: Path, annotations: Path | None,
                 strict: bool = False) -> dict[str, float]:
        """score() on the answer lines that match a question of the question file (of repeated ones, the last),
        plus the counts of unmatched and duplicate answer lines and unanswered questions, so nothing is dropped
        unseen; strict: any of them is an error instead, naming the question ids."""
        from pipelines.benchmarks.records import (  # records imports this module
            check_answers,
            match_answers,
        )

        check_answers(answers)
        question_keys = [self.question_key(question) for question in self.load_questions(questions_path)]
        kept, coverage = match_answers(answers, question_keys, self.answer_question_key, self.answer_identity)
        if not coverage.complete:
            if strict:
                raise BenchmarkDataError(f"{coverage.describe(self.name)} (strict)")
            logger.warning("%s", coverage.describe(self.name))
        return {**self.score(kept, questions_path, annotations), **coverage.metrics()}

    def question_key(self, question: EvalQuestion) -> str:
        """What identifies a question of the question file, for matching answer lines to it."""
        return str(question.question_id)

    def answer_question_key(self, answer: dict[str, Any]) -> str:
        """The question_key of the question an answer line answers."""
        return str(answer["question_id"])

    def answer_identity(self, answer: dict[str, Any]) -> str:
        """What makes two answer lines the same answer (a repeat): by default, answering the same question."""
        return self.answer_question_key(answer)

    @abstractmethod
    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        """The official question file as generation requests, in file order."""

    @abstractmethod
    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        """Flat metric name -> number, computed as the official script computes it. `annotations` is the ground
        truth where the question file does not carry it (each module's docstring says which file or folder)."""

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        """The file an evaluation server expects, written under out_dir; only server-scored splits have one."""
        raise BenchmarkDataError(f"{self.name} has no submission format: it is scored locally with score()")

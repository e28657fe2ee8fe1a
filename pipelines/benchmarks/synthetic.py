"""Our synthetic spatial split (pipelines/synthetic.py): exact-match accuracy against chance.

Questions: the data set's `test.jsonl` ({question_id, image, text, answer, question_type}; the text already ends
with the short-answer suffix, like LLaVA's eval files). The ground truth is in the question file itself; the chance
numbers come from `metadata.json` (`--annotations`, or next to test.jsonl when not given; absent is fine).

An answer is right iff, lower-cased, stripped and without trailing periods, it equals the expected one-word answer
(normalised the same way). Metrics are fractions: `accuracy` and `<question_type>/accuracy`, and, when the metadata
is there, `uniform_chance` and `majority_baseline` overall and per question type, to read the accuracy against.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    answers_by_id,
    id_key,
    loader_questions,
    ratio,
    read_json,
    warn_missing,
)

METADATA_NAME = "metadata.json"
CHANCE_NUMBERS = ("uniform_chance", "majority_baseline")


def normalize_short_answer(text: str) -> str:
    return text.lower().strip().rstrip(".").strip()


class SyntheticBenchmark(Benchmark):
    name = "synthetic"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        questions = loader_questions(questions_path)
        for question in questions:
            for key in ("answer", "question_type"):
                if key not in question.metadata:
                    raise BenchmarkDataError(f"{questions_path}: question_id {question.question_id}: missing field "
                                             f"{key!r} (the synthetic test split carries its ground truth)")
        return questions

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        predictions = answers_by_id(answers)
        by_type: dict[str, list[bool]] = defaultdict(list)
        missing = 0
        for question in self.load_questions(questions_path):
            answer = predictions.get(id_key(question.question_id))
            missing += answer is None
            expected = normalize_short_answer(str(question.metadata["answer"]))
            by_type[str(question.metadata["question_type"])].append(
                answer is not None and normalize_short_answer(answer["text"]) == expected)
        everything = [flag for flags in by_type.values() for flag in flags]
        warn_missing(self.name, missing, len(everything))
        metrics: dict[str, float] = {"accuracy": ratio(sum(everything), len(everything))}
        for question_type, flags in sorted(by_type.items()):
            metrics[f"{question_type}/accuracy"] = ratio(sum(flags), len(flags))
        metrics.update(_chance_numbers(annotations or Path(questions_path).parent / METADATA_NAME,
                                       explicit=annotations is not None, question_types=sorted(by_type)))
        metrics.update(questions=len(everything), missing=missing)
        return metrics


def _chance_numbers(path: Path, explicit: bool, question_types: list[str]) -> dict[str, float]:
    """uniform_chance / majority_baseline overall and per question type, from the data set's metadata.json."""
    if Path(path).is_dir():
        path = Path(path) / METADATA_NAME
    if not Path(path).is_file():
        if explicit:
            raise BenchmarkDataError(f"{path}: no such file (the synthetic data set's metadata.json)")
        return {}
    loaded = read_json(path)
    types = loaded.get("question_types") if isinstance(loaded, dict) else None
    if not isinstance(types, dict):
        raise BenchmarkDataError(f"{path}: expected {{\"question_types\": {{type: {{uniform_chance, ...}}}}}}")
    numbers: dict[str, float] = {}
    for group, prefix in [("overall", ""), *((question_type, f"{question_type}/") for question_type in question_types)]:
        entry = types.get(group)
        if not isinstance(entry, dict):
            continue
        for name in CHANCE_NUMBERS:
            if isinstance(entry.get(name), (int, float)):
                numbers[f"{prefix}{name}"] = float(entry[name])
    return numbers

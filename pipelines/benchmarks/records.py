"""Reading benchmark files and answer lines, with one-line errors that name the file, the line and the problem.

Official files come from many sources (LLaVA's eval.zip, each benchmark's own release); a missing field or a
truncated line must say where it is, not surface as a KeyError deep inside a scorer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import (
    LOADER_MAX_NEW_TOKENS,
    BenchmarkDataError,
    EvalQuestion,
)

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON-lines file, each a JSON object."""
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every non-blank line; `where` is "file:line", for error messages."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchmarkDataError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((f"{path}:{number}", row))
    return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise BenchmarkDataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BenchmarkDataError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as error:
        raise BenchmarkDataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def require_fields(row: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(row, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in keys if key not in row]
    if missing:
        raise BenchmarkDataError(f"{where}: missing field {', '.join(map(repr, missing))} "
                                 f"(has: {', '.join(sorted(map(str, row))) or 'nothing'})")


def numbered(items: list[Any], path: Path) -> list[tuple[str, Any]]:
    """(where, item) pairs of a JSON array, for error messages; `where` is "file: item N" (1-based)."""
    return [(f"{path}: item {index}", item) for index, item in enumerate(items, start=1)]


def id_key(question_id: Any) -> str:
    """Question ids are ints in some files and strings in others (and JSON keys are always strings)."""
    return str(question_id)


def check_answers(answers: list[dict[str, Any]]) -> None:
    """Every answer line has a question_id and a string text; scorers can then index them freely."""
    for index, answer in enumerate(answers, start=1):
        if not isinstance(answer, dict):
            raise BenchmarkDataError(f"answer {index}: expected a JSON object, got {type(answer).__name__}")
        require_fields(answer, ("question_id", "text"), f"answer {index}")
        if not isinstance(answer["text"], str):
            raise BenchmarkDataError(f"answer {index} (question_id {answer['question_id']}): 'text' must be a "
                                     f"string, got {type(answer['text']).__name__}")


def answers_by_id(answers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """question_id -> answer line; with duplicates the last line wins, as the official dict comprehensions do."""
    check_answers(answers)
    return {id_key(answer["question_id"]): answer for answer in answers}


def questions_by_id(path: Path) -> dict[str, dict[str, Any]]:
    """question_id -> row of a JSON-lines question file."""
    indexed = {}
    for where, row in read_jsonl_lines(path):
        require_fields(row, ("question_id",), where)
        indexed[id_key(row["question_id"])] = row
    return indexed


def annotation_file(annotations: Path | None, benchmark: str, default_name: str, what: str) -> Path:
    """The ground-truth file: `annotations` itself, or default_name inside it when it is a folder."""
    if annotations is None:
        raise BenchmarkDataError(f"{benchmark} needs --annotations: {what}")
    path = Path(annotations)
    return path / default_name if path.is_dir() else path


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 for an empty set (the official scripts would divide by zero)."""
    return numerator / denominator if denominator else 0.0


def warn_missing(benchmark: str, missing: int, total: int) -> None:
    if missing:
        logger.warning("%s: %d of %d questions have no answer and count as wrong", benchmark, missing, total)


def metric_key(name: str) -> str:
    """A category name as a metric-name component: "Scene Understanding" -> "scene_understanding"."""
    cleaned = "".join(character if character.isalnum() else "_" for character in str(name).lower())
    return "_".join(part for part in cleaned.split("_") if part) or "unnamed"


def loader_questions(path: Path, max_new_tokens: int = LOADER_MAX_NEW_TOKENS) -> list[EvalQuestion]:
    """A question file in LLaVA's eval format ({question_id, image, text, ...} per line), read as
    model_vqa_loader.py / model_vqa.py read it: the text is the prompt unchanged (its suffix is already in the
    file), and every other field (category, answer, question_type, ...) goes to metadata."""
    questions = []
    for where, row in read_jsonl_lines(path):
        require_fields(row, ("question_id", "text"), where)
        metadata = {key: value for key, value in row.items() if key not in ("question_id", "image", "text")}
        questions.append(EvalQuestion(question_id=row["question_id"], prompt=str(row["text"]),
                                      image=row.get("image"), max_new_tokens=max_new_tokens, metadata=metadata))
    return questions


SHOWN_IDS = 5  # ids an error or warning lists before it counts the rest


@dataclass(frozen=True)
class AnswerCoverage:
    """How an answer file covers a question file: answer lines that match no question, answer lines repeating an
    earlier one's question, and questions left without an answer."""

    unmatched: list[str]
    duplicates: list[str]
    unanswered: list[str]

    @property
    def complete(self) -> bool:
        return not (self.unmatched or self.duplicates or self.unanswered)

    def metrics(self) -> dict[str, int]:
        return {"unmatched_answers": len(self.unmatched), "duplicate_answers": len(self.duplicates),
                "unanswered": len(self.unanswered)}

    def describe(self, benchmark: str) -> str:
        parts = [f"{len(ids)} {what} ({_shown(ids)})" for ids, what in (
            (self.unmatched, "answer line(s) match no question of the question file, not scored"),
            (self.duplicates, "answer line(s) repeat an earlier answer's question, the last one is scored"),
            (self.unanswered, "question(s) have no answer and count as wrong"))
            if ids]
        return f"{benchmark}: " + "; ".join(parts)


def _shown(ids: list[str]) -> str:
    more = f", ... {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return "question_id " + ", ".join(ids[:SHOWN_IDS]) + more


def match_answers(
    answers: list[dict[str, Any]],
    question_keys: list[str],
    answer_question_key: Callable[[dict[str, Any]], str],
    answer_identity: Callable[[dict[str, Any]], str],
) -> tuple[list[dict[str, Any]], AnswerCoverage]:
    """The answer lines that match a question, one per identity (the last line, at the first one's place, as the
    official scripts' dict comprehensions keep it), and the coverage."""
    known = set(question_keys)
    kept: dict[str, dict[str, Any]] = {}
    unmatched, duplicates = [], []
    for answer in answers:
        key = answer_question_key(answer)
        if key not in known:
            unmatched.append(key)
            continue
        identity = answer_identity(answer)
        if identity in kept:
            duplicates.append(identity)
        kept[identity] = answer
    answered = {answer_question_key(answer) for answer in kept.values()}
    unanswered = [key for key in question_keys if key not in answered]
    return list(kept.values()), AnswerCoverage(unmatched, duplicates, unanswered)

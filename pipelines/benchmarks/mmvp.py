"""MMVP ("Eyes Wide Shut", Tong et al. 2024): 150 pairs of images that CLIP sees as alike, one question per image.

Source of the format: github.com/tsb0601/MMVP, scripts/evaluate_mllm.py and scripts/gpt_grader.py, and the
MMVP/MMVP data set (`Questions.csv` with columns Index, Question, Options, Correct Answer; images
`MMVP Images/<n>.jpg`). The loader asks row n (1-based; its question_id) about image n with the prompt
`Question + " " + Options` (e.g. "Is the door open or closed? (a) Open (b) Closed") and no answer-format suffix,
1024 new tokens. (evaluate_mllm.py spells the folder "MMVP Imgaes"; the data set's folder is "MMVP Images".)

Scoring: rows 2k-1 and 2k ask the same question of the two images of pair k; a pair counts only if both answers
are right (`accuracy`, a fraction as gpt_grader.py prints it), and `question_accuracy` counts single questions.
gpt_grader.py pairs consecutive answer lines; we pair by question_id, which is the same for an answer file in
order and still right for one merged from chunks. The official grader asks GPT-4 whether each answer is right;
here grading is deterministic (`chosen_option`): the option letter written as "(a)", "a)", "a." or "a" at the
start of the answer, else the option whose text the answer equals, else the only option whose text the answer
contains as words. An answer that names no option, or two, is wrong (`unparsed` counts them).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    EvalQuestion,
)
from pipelines.benchmarks.records import answers_by_id, id_key, ratio, warn_missing

IMAGE_FOLDER = "MMVP Images"
COLUMNS = ("Question", "Options", "Correct Answer")
OPTION = re.compile(r"\(([a-z])\)\s*(.*?)\s*(?=\([a-z]\)|$)", re.IGNORECASE | re.DOTALL)
LEADING_LETTER = re.compile(r"^\(?([a-z])(?:\)|\.|:|$)", re.IGNORECASE)
CORRECT_LETTER = re.compile(r"^\s*\(?([a-z])\)?", re.IGNORECASE)


def parse_options(options: str) -> dict[str, str]:
    """"(a) Open (b) Closed" -> {"a": "Open", "b": "Closed"}."""
    return {letter.lower(): text for letter, text in OPTION.findall(options)}


def chosen_option(answer: str, options: dict[str, str]) -> str | None:
    """The option letter an answer picks, or None when it picks none or several."""
    text = answer.strip()
    leading = LEADING_LETTER.match(text)
    if leading and leading.group(1).lower() in options:
        return leading.group(1).lower()
    bare = text.rstrip(".").strip().lower()
    for letter, option in options.items():
        if bare == option.strip().lower():
            return letter
    named = [letter for letter, option in options.items()
             if option.strip() and re.search(rf"\b{re.escape(option.strip().lower())}\b", bare)]
    return named[0] if len(named) == 1 else None


def read_mmvp_csv(path: Path) -> list[dict[str, str]]:
    try:
        with Path(path).open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise BenchmarkDataError(f"{path}:1: missing column {', '.join(map(repr, missing))} "
                                         f"(has: {', '.join(reader.fieldnames or [])})")
            return list(reader)
    except FileNotFoundError:
        raise BenchmarkDataError(f"{path}: no such file") from None


class MMVPBenchmark(Benchmark):
    name = "mmvp"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        questions = []
        for number, row in enumerate(read_mmvp_csv(questions_path), start=1):
            questions.append(EvalQuestion(
                question_id=number, prompt=f"{row['Question']} {row['Options']}",
                image=f"{IMAGE_FOLDER}/{number}.jpg", max_new_tokens=LONG_MAX_NEW_TOKENS,
                metadata={"index": row.get("Index"), "correct_answer": row["Correct Answer"]}))
        return questions

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        rows = read_mmvp_csv(questions_path)
        if len(rows) % 2:
            raise BenchmarkDataError(f"{questions_path}: {len(rows)} questions; MMVP asks them in pairs, so the "
                                     "count must be even")
        predictions = answers_by_id(answers)
        right, missing, unparsed = [], 0, 0
        for number, row in enumerate(rows, start=1):
            options = parse_options(row["Options"])
            truth = CORRECT_LETTER.match(row["Correct Answer"])
            if not options or truth is None or truth.group(1).lower() not in options:
                raise BenchmarkDataError(f"{questions_path}: row {number}: cannot read options {row['Options']!r} "
                                         f"with correct answer {row['Correct Answer']!r}")
            answer = predictions.get(id_key(number))
            missing += answer is None
            picked = None if answer is None else chosen_option(answer["text"], options)
            unparsed += answer is not None and picked is None
            right.append(picked == truth.group(1).lower())
        warn_missing(self.name, missing, len(rows))
        pairs = [right[start] and right[start + 1] for start in range(0, len(right), 2)]
        return {"accuracy": ratio(sum(pairs), len(pairs)), "question_accuracy": ratio(sum(right), len(right)),
                "pairs": len(pairs), "questions": len(right), "missing": missing, "unparsed": unparsed}

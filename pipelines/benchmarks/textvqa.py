r"""TextVQA (val): eval_textvqa.py with m4c's TextVQAAccuracyEvaluator.

Questions: LLaVA's `llava_textvqa_val_v051_ocr.jsonl`; each text is "question\nReference OCR token: ...\nAnswer the
question using a single word or phrase." (or the question and the suffix only).
Annotations (`--annotations`): `TextVQA_0.5.1_val.json` ({"data": [{image_id, question_id, question, answers: [10]}]}).

As the official script, every *answer line* is scored: its question is recovered from the answer's prompt
(`question_from_prompt`), lower-cased, and looked up as (answer question_id, question) among the annotations keyed
by (image_id, question). LLaVA's question_id there appears to be the image_id; in case a file carries the
TextVQA question_id instead, the (question_id, question) key is tried second. No match is an error (upstream: a
KeyError). The number is the mean soft accuracy x 100.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    annotation_file,
    check_answers,
    id_key,
    loader_questions,
    numbered,
    read_json,
    require_fields,
)
from pipelines.benchmarks.vqa_accuracy import (
    SoftAccuracyItem,
    human_answer_texts,
    soft_accuracy_metrics,
)

OCR_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)
OCR_REFERENCE = "Reference OCR token: "


def question_from_prompt(prompt: str) -> str:
    """eval_textvqa.prompt_processor: the bare question (lower-cased) inside one of the three prompt layouts."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = OCR_QUESTION.search(prompt)
        if match is None:
            raise ValueError("prompt starts with 'OCR tokens: ' but has no 'Question: ... Short answer:'")
        question = match.group(1)
    elif OCR_REFERENCE in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"prompt has {len(lines)} lines and no OCR layout; expected 'question\\nsuffix' or "
                         "'question\\nReference OCR token: ...\\nsuffix'")
    return question.lower()


class TextVQABenchmark(Benchmark):
    name = "textvqa"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        path = annotation_file(annotations, self.name, "TextVQA_0.5.1_val.json",
                               "TextVQA_0.5.1_val.json (or the folder holding it)")
        by_image, by_question = textvqa_annotations(path)
        check_answers(answers)
        items = []
        for index, answer in enumerate(answers, start=1):
            where = f"answer {index} (question_id {answer['question_id']})"
            if "prompt" not in answer:
                raise BenchmarkDataError(f"{where}: missing field 'prompt'; TextVQA finds the question through it")
            try:
                question = question_from_prompt(str(answer["prompt"]))
            except ValueError as error:
                raise BenchmarkDataError(f"{where}: {error}") from None
            key = (id_key(answer["question_id"]), question)
            human_answers = by_image.get(key) or by_question.get(key)
            if human_answers is None:
                raise BenchmarkDataError(f"{where}: no annotation in {path} for image_id/question_id "
                                         f"{key[0]!r} with question {question!r}")
            items.append(SoftAccuracyItem(answer["text"], human_answers, None, f"{path}: {where}"))
        return soft_accuracy_metrics(items)


def textvqa_annotations(path: Path) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], list[str]]]:
    """Human answers keyed by (image_id, lower question) and by (question_id, lower question)."""
    loaded = read_json(path)
    rows = loaded.get("data") if isinstance(loaded, dict) else None
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected {{\"data\": [...]}} (TextVQA annotation format)")
    by_image, by_question = {}, {}
    for where, row in numbered(rows, path):
        require_fields(row, ("image_id", "question", "answers"), where)
        question = str(row["question"]).lower()
        answers = human_answer_texts(row["answers"], where)
        by_image[(id_key(row["image_id"]), question)] = answers
        if "question_id" in row:
            by_question[(id_key(row["question_id"]), question)] = answers
    return by_image, by_question

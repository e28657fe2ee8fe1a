"""GQA (testdev-balanced): convert_gqa_for_eval.py + the official GQA eval.py accuracy.

Questions: LLaVA's `llava_gqa_testdev_balanced.jsonl` ({question_id, image, text}, text ending with the
short-answer suffix). The prediction is `text.rstrip('.').lower()` (the converter), compared by raw exact string
equality with the annotation's answer (eval.py). `write_submission` writes the converter's
`testdev_balanced_predictions.json` ([{questionId, prediction}], one per answer line) for the official tool.

Annotations (`--annotations`): `testdev_balanced_questions.json` ({questionId: {answer, isBalanced, types}}).
Questions of the question file are scored (those with isBalanced false are skipped, as eval.py skips them);
eval.py stops with a KeyError on a question that has no prediction, we count it as wrong and report `missing`.
`binary` / `open` split by types.structural (verify/logical are binary), as eval.py does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    annotation_file,
    answers_by_id,
    check_answers,
    id_key,
    loader_questions,
    ratio,
    read_json,
    require_fields,
    warn_missing,
)

SUBMISSION_NAME = "testdev_balanced_predictions.json"
BINARY_STRUCTURES = ("verify", "logical")


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


class GQABenchmark(Benchmark):
    name = "gqa"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        path = annotation_file(annotations, self.name, "testdev_balanced_questions.json",
                               "testdev_balanced_questions.json (or the folder holding it)")
        truth = read_json(path)
        if not isinstance(truth, dict):
            raise BenchmarkDataError(f"{path}: expected {{questionId: {{answer, ...}}}} (GQA question format)")
        predictions = answers_by_id(answers)
        correct: dict[str, list[bool]] = {"accuracy": [], "binary": [], "open": []}
        missing = 0
        for question in self.load_questions(questions_path):
            key = id_key(question.question_id)
            entry = truth.get(key)
            if entry is None:
                raise BenchmarkDataError(f"{path}: no question {key} (asked in {questions_path})")
            require_fields(entry, ("answer",), f"{path}: question {key}")
            if not entry.get("isBalanced", True):
                continue
            answer = predictions.get(key)
            missing += answer is None
            right = answer is not None and gqa_prediction(answer["text"]) == entry["answer"]
            correct["accuracy"].append(right)
            structural = (entry.get("types") or {}).get("structural")
            if structural is not None:
                correct["binary" if structural in BINARY_STRUCTURES else "open"].append(right)
        warn_missing(self.name, missing, len(correct["accuracy"]))
        metrics: dict[str, float] = {name: 100.0 * ratio(sum(flags), len(flags))
                                     for name, flags in correct.items() if flags or name == "accuracy"}
        metrics.update(questions=len(correct["accuracy"]), missing=missing)
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path) -> Path:
        check_answers(answers)
        predictions = [{"questionId": answer["question_id"], "prediction": gqa_prediction(answer["text"])}
                       for answer in answers]
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        destination.write_text(json.dumps(predictions))
        return destination

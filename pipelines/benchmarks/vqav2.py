"""VQAv2: submission for the EvalAI server, and the same soft accuracy locally when annotations are at hand.

Questions: LLaVA's `llava_vqav2_mscoco_test-dev2015.jsonl` ({question_id, image, text}); the text already ends
with "Answer the question using a single word or phrase.". test-dev answers are not public, so the official
route is `write_submission` (convert_vqav2_for_submission.py): for every question of the *test2015* question file,
{question_id, answer: EvalAI-normalised text}, or "" when the model gave none. The server scores it with VQA
accuracy (averaged over the 10-choose-9 human subsets, see vqa_accuracy.py).

Local scoring (`--annotations`): a VQA-format annotation file (e.g. v2_mscoco_val2014_annotations.json:
{"annotations": [{question_id, answers: [{answer}, ...10], answer_type}]}); every question of the question file is
scored, and a question without an answer scores 0, as its "" would on the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    annotation_file,
    answers_by_id,
    id_key,
    loader_questions,
    numbered,
    read_json,
    require_fields,
    warn_missing,
)
from pipelines.benchmarks.vqa_accuracy import (
    SoftAccuracyItem,
    human_answer_texts,
    normalize_answer,
    soft_accuracy_metrics,
)

SUBMISSION_NAME = "vqav2_submission.json"


class VQAv2Benchmark(Benchmark):
    name = "vqav2"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        path = annotation_file(annotations, self.name, "v2_mscoco_val2014_annotations.json",
                               "a VQA annotation file with 10 human answers per question (test-dev is scored by "
                               "the EvalAI server: use write_submission)")
        truth = vqa_annotations(path)
        predictions = answers_by_id(answers)
        items = []
        for question in self.load_questions(questions_path):
            key = id_key(question.question_id)
            if key not in truth:
                raise BenchmarkDataError(f"{path}: no annotation for question_id {question.question_id} "
                                         f"of {questions_path}")
            human_answers, answer_type = truth[key]
            answer = predictions.get(key)
            items.append(SoftAccuracyItem(None if answer is None else answer["text"], human_answers, answer_type,
                                          f"{path}: question_id {question.question_id}"))
        metrics = soft_accuracy_metrics(items)
        warn_missing(self.name, int(metrics["missing"]), len(items))
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path) -> Path:
        """Every question of `questions_path` (the test2015 file), normalised, "" where unanswered."""
        predictions = answers_by_id(answers)
        upload = []
        for question in self.load_questions(questions_path):
            answer = predictions.get(id_key(question.question_id))
            upload.append({"question_id": question.question_id,
                           "answer": "" if answer is None else normalize_answer(answer["text"])})
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        destination.write_text(json.dumps(upload))
        return destination


def vqa_annotations(path: Path) -> dict[str, tuple[list[str], str | None]]:
    """question_id -> (human answers, answer_type) from a VQA-format annotation file."""
    loaded = read_json(path)
    rows = loaded.get("annotations") if isinstance(loaded, dict) else loaded
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected {{\"annotations\": [...]}} or a list of annotations")
    truth = {}
    for where, row in numbered(rows, path):
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{where}: expected an object, got {type(row).__name__}")
        require_fields(row, ("question_id", "answers"), where)
        truth[id_key(row["question_id"])] = (human_answer_texts(row["answers"], where), row.get("answer_type"))
    return truth

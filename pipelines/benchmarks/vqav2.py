"""VQAv2: submission for the EvalAI server, and the same soft accuracy locally when annotations are at hand.

Questions: LLaVA's `llava_vqav2_mscoco_test-dev2015.jsonl` ({question_id, image, text}); the text already ends
with "Answer the question using a single word or phrase.". test-dev answers are not public, so the official
route is `write_submission` (convert_vqav2_for_submission.py): for every question of the *test2015* question file,
{question_id, answer: EvalAI-normalised text}, or "" when the model gave none. The server scores it with VQA
accuracy (averaged over the 10-choose-9 human subsets, see vqa_accuracy.py).

Local scoring (`--annotations`): a VQA-format annotation file (e.g. v2_mscoco_val2014_annotations.json:
{"annotations": [{question_id, answers: [{answer, answer_confidence, answer_id}, ...10], answer_type,
question_type}]}), scored as the official chain scores it: the converter's EvalAI-normalised text (what
write_submission uploads) through the VQA API's vqaEval.py (`vqa_api_accuracy`: human answers normalised only when
they disagree, and never "'s"-split or lower-cased). Every question of the question file is scored, and a question
without an answer scores 0, as its "" would. `accuracy`, per answer type and per question type are vqaEval.py's
figures; `evalai/accuracy` is the other convention, both sides through the EvalAI processor (TextVQA's evaluator,
lmms-eval's local VQAv2 score), for comparison with numbers computed that way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    vqa_api_accuracy,
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
        api_items, evalai_items = [], []
        for question in self.load_questions(questions_path):
            key = id_key(question.question_id)
            if key not in truth:
                raise BenchmarkDataError(f"{path}: no annotation for question_id {question.question_id} "
                                         f"of {questions_path}")
            annotation = truth[key]
            text = None if key not in predictions else predictions[key]["text"]
            where = f"{path}: question_id {question.question_id}"
            uploaded = None if text is None else normalize_answer(text)  # convert_vqav2_for_submission.py
            api_items.append(SoftAccuracyItem(uploaded, annotation.answers, annotation.answer_type, where,
                                              annotation.question_type))
            evalai_items.append(SoftAccuracyItem(text, [answer["answer"] for answer in annotation.answers], None,
                                                 where))
        metrics = soft_accuracy_metrics(api_items, vqa_api_accuracy)
        metrics["evalai/accuracy"] = soft_accuracy_metrics(evalai_items)["accuracy"]
        warn_missing(self.name, int(metrics["missing"]), len(api_items))
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
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


@dataclass(frozen=True)
class VQAAnnotation:
    answers: list[dict[str, Any]]  # the ten human answer dicts, as annotated
    answer_type: str | None
    question_type: str | None


def vqa_annotations(path: Path) -> dict[str, VQAAnnotation]:
    """question_id -> its annotation, from a VQA-format annotation file. Human answers given as plain strings (not
    the official format) become {"answer": text, "answer_id": position}."""
    loaded = read_json(path)
    rows = loaded.get("annotations") if isinstance(loaded, dict) else loaded
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected {{\"annotations\": [...]}} or a list of annotations")
    truth = {}
    for where, row in numbered(rows, path):
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{where}: expected an object, got {type(row).__name__}")
        require_fields(row, ("question_id", "answers"), where)
        texts = human_answer_texts(row["answers"], where)
        answers = [dict(answer) if isinstance(answer, dict) else {"answer": text, "answer_id": position}
                   for position, (answer, text) in enumerate(zip(row["answers"], texts, strict=True), start=1)]
        for answer, text in zip(answers, texts, strict=True):
            answer["answer"] = text
        truth[id_key(row["question_id"])] = VQAAnnotation(answers, row.get("answer_type"), row.get("question_type"))
    return truth

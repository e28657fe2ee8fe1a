"""VizWiz-VQA: submission for the EvalAI server, and the VizWiz API's accuracy locally when annotations are at hand.

Questions: LLaVA's `llava_test.jsonl` ({question_id, image, text}); the text carries "When the provided information
is insufficient, respond with 'Unanswerable'." before the short-answer suffix.
`write_submission` is convert_vizwiz_for_submission.py: every question must have been answered (upstream asserts
it; here the error lists the unanswered ids), and each becomes {image, answer: EvalAI-normalised text}.

Local scoring (`--annotations`): VizWiz's `val.json` ([{image, question, answers: [{answer, ...} x10],
answer_type}]), matched to questions by image file name, scored as the official chain scores it: the converter's
EvalAI-normalised text (what write_submission uploads) through the VizWiz API's evaluation (`vizwiz_api_accuracy`:
human answers as annotated, never normalised). Every question of the question file is scored; an unanswered one
scores 0. `accuracy` and the per-answer-type figures are the VizWiz API's; `evalai/accuracy` is both sides through
the EvalAI processor, for comparison with numbers computed that way.
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
    vizwiz_api_accuracy,
)

SUBMISSION_NAME = "vizwiz_submission.json"
MISSING_SHOWN = 5  # unanswered question ids listed in the error


class VizWizBenchmark(Benchmark):
    name = "vizwiz"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        path = annotation_file(annotations, self.name, "val.json",
                               "VizWiz val.json with 10 human answers per image (the test split is scored by "
                               "the EvalAI server: use write_submission)")
        truth = vizwiz_annotations(path)
        predictions = answers_by_id(answers)
        api_items, evalai_items = [], []
        for question in self.load_questions(questions_path):
            image = _image_name(question, questions_path)
            if image not in truth:
                raise BenchmarkDataError(f"{path}: no annotation for image {image!r} "
                                         f"(question_id {question.question_id} of {questions_path})")
            human_answers, answer_type = truth[image]
            answer = predictions.get(id_key(question.question_id))
            text = None if answer is None else answer["text"]
            uploaded = None if text is None else normalize_answer(text)  # convert_vizwiz_for_submission.py
            api_items.append(SoftAccuracyItem(uploaded, human_answers, answer_type, f"{path}: image {image}"))
            evalai_items.append(SoftAccuracyItem(text, human_answers, None, f"{path}: image {image}"))
        metrics = soft_accuracy_metrics(api_items, vizwiz_api_accuracy)
        metrics["evalai/accuracy"] = soft_accuracy_metrics(evalai_items)["accuracy"]
        warn_missing(self.name, int(metrics["missing"]), len(api_items))
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        predictions = answers_by_id(answers)
        questions = self.load_questions(questions_path)
        unanswered = [question.question_id for question in questions
                      if id_key(question.question_id) not in predictions]
        if unanswered:
            shown = ", ".join(map(str, unanswered[:MISSING_SHOWN])) + (", ..." if len(unanswered) > MISSING_SHOWN
                                                                       else "")
            raise BenchmarkDataError(f"vizwiz submission needs an answer to every question of {questions_path}: "
                                     f"{len(unanswered)} unanswered (question_id {shown}); rerun generation for them")
        upload = [{"image": _image_name(question, questions_path),
                   "answer": normalize_answer(predictions[id_key(question.question_id)]["text"])}
                  for question in questions]
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        destination.write_text(json.dumps(upload))
        return destination


def _image_name(question: EvalQuestion, questions_path: Path) -> str:
    if not question.image:
        raise BenchmarkDataError(f"{questions_path}: question_id {question.question_id} has no 'image'; "
                                 "VizWiz identifies questions by image")
    return question.image


def vizwiz_annotations(path: Path) -> dict[str, tuple[list[str], str | None]]:
    """image file name -> (human answers, answer_type)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected a list of {{image, question, answers}} (VizWiz format)")
    truth = {}
    for where, row in numbered(rows, path):
        require_fields(row, ("image", "answers"), where)
        truth[str(row["image"])] = (human_answer_texts(row["answers"], where), row.get("answer_type"))
    return truth

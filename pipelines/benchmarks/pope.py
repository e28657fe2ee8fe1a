"""POPE (object hallucination): eval_pope.py.

Questions: LLaVA's `llava_pope_test.jsonl` ({question_id, image, text, category}), category being one of the
annotation files' names (adversarial, popular, random).
Annotations (`--annotations`): the folder of `coco_pope_<category>.json` files (JSON lines with a "label").

For each category (sorted; upstream walks os.listdir): the answer lines whose question has that category, in
answer-file order, are paired with the annotation labels **by position** (zip, so the shorter list decides), not
by question_id. An answer is "no" when its first sentence (text before the first '.'), commas removed, split on
' ', contains the word "No", "not" or "no"; anything else is "yes" ("NO" and "Nope" are yes). Labels: "no" -> no,
anything else -> yes. Positive = yes. Metrics are fractions, per category and averaged over categories
(`average/...`): acc, precision, recall, f1 and yes_ratio (# yes predictions / # answers of the category).
Where upstream divides by zero (no yes predictions), the metric is 0.0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    check_answers,
    id_key,
    loader_questions,
    questions_by_id,
    ratio,
    read_jsonl_lines,
    require_fields,
)

logger = logging.getLogger(__name__)

ANNOTATION_PREFIX, ANNOTATION_SUFFIX = "coco_pope_", ".json"
NO_WORDS = ("No", "not", "no")
METRICS = ("acc", "precision", "recall", "f1", "yes_ratio")


def is_yes(text: str) -> bool:
    """eval_pope.py's reading of a free-form answer."""
    first_sentence = text.split(".")[0] if "." in text else text
    words = first_sentence.replace(",", "").split(" ")
    return not any(word in words for word in NO_WORDS)


@dataclass(frozen=True)
class PopeCounts:
    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int
    predictions: int  # answers of the category, including any beyond the labels (yes_ratio's denominator)
    yes_predictions: int

    def metrics(self) -> dict[str, float]:
        precision = ratio(self.true_positive, self.true_positive + self.false_positive)
        recall = ratio(self.true_positive, self.true_positive + self.false_negative)
        paired = self.true_positive + self.false_positive + self.true_negative + self.false_negative
        return {
            "acc": ratio(self.true_positive + self.true_negative, paired),
            "precision": precision,
            "recall": recall,
            "f1": ratio(2 * precision * recall, precision + recall),
            "yes_ratio": ratio(self.yes_predictions, self.predictions),
        }


def pope_counts(predictions: list[bool], labels: list[bool]) -> PopeCounts:
    """Confusion counts of yes/no predictions against labels, paired by position."""
    pairs = list(zip(predictions, labels))
    return PopeCounts(
        true_positive=sum(p and label for p, label in pairs),
        false_positive=sum(p and not label for p, label in pairs),
        true_negative=sum(not p and not label for p, label in pairs),
        false_negative=sum(not p and label for p, label in pairs),
        predictions=len(predictions),
        yes_predictions=sum(predictions),
    )


class PopeBenchmark(Benchmark):
    name = "pope"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        label_files = _label_files(annotations)
        questions = questions_by_id(questions_path)
        check_answers(answers)
        categories = []
        for index, answer in enumerate(answers, start=1):
            question = questions.get(id_key(answer["question_id"]))
            if question is None:
                raise BenchmarkDataError(f"answer {index}: question_id {answer['question_id']!r} is not in "
                                         f"{questions_path}")
            require_fields(question, ("category",), f"{questions_path}: question_id {answer['question_id']}")
            categories.append(question["category"])
        metrics: dict[str, float] = {}
        for category, label_file in label_files.items():
            predictions = [is_yes(answer["text"]) for answer, answer_category in zip(answers, categories)
                           if answer_category == category]
            labels = _labels(label_file)
            if len(predictions) != len(labels):
                logger.warning("pope %s: %d answers but %d labels; only the first %d are paired", category,
                               len(predictions), len(labels), min(len(predictions), len(labels)))
            for name, value in pope_counts(predictions, labels).metrics().items():
                metrics[f"{category}/{name}"] = value
        for name in METRICS:
            metrics[f"average/{name}"] = ratio(sum(metrics[f"{c}/{name}"] for c in label_files), len(label_files))
        return metrics


def _label_files(annotations: Path | None) -> dict[str, Path]:
    """category -> its coco_pope_<category>.json, sorted by category."""
    if annotations is None or not Path(annotations).is_dir():
        raise BenchmarkDataError(f"pope needs --annotations: the folder of {ANNOTATION_PREFIX}<category>"
                                 f"{ANNOTATION_SUFFIX} label files (got {annotations})")
    files = {path.name[len(ANNOTATION_PREFIX):-len(ANNOTATION_SUFFIX)]: path
             for path in sorted(Path(annotations).iterdir())
             if path.name.startswith(ANNOTATION_PREFIX) and path.name.endswith(ANNOTATION_SUFFIX)}
    if not files:
        raise BenchmarkDataError(f"{annotations}: no {ANNOTATION_PREFIX}<category>{ANNOTATION_SUFFIX} files")
    return files


def _labels(path: Path) -> list[bool]:
    labels = []
    for where, row in read_jsonl_lines(path):
        require_fields(row, ("label",), where)
        labels.append(row["label"] != "no")
    return labels

"""Your own benchmark: a LLaVA-format question file, its ground truth and a choice of metric.

Questions: JSON lines {question_id, image, text, ...} as LLaVA's eval files have them (the text is the prompt as
it is, suffix included; image is relative to the benchmark's image folder; no image makes a text-only question).
The ground truth is each row's `answer` field (`answers`, a list of ten human answers, for `vqa`), or, with
`--annotations` / `annotations=`, a JSON-lines file of {question_id, answer | answers}. A row's `category`, when
present, gives per-category scores.

Metrics (`metric=`), each a fraction in [0, 1] like our other own splits:
- `exact`: the answer equals the truth after the EvalAI answer normalisation of VQAv2 / TextVQA / VizWiz
  (lower case, punctuation, articles, number words; see vqa_accuracy.py);
- `vqa`: the soft VQA accuracy against ten human answers (min(1, matches / 3) over the 10-choose-9 subsets, both
  sides normalised as TextVQA's evaluator does);
- `choice`: the option letter the answer starts with ("B", "B.", "(B) ...") equals the truth's letter;
- `yesno`: the answer read as POPE reads it (no if a "no"/"not" word is in its first sentence, else yes) equals
  the truth's yes or no.

Results: `accuracy`, `category/<name>` per category, `questions` and `missing` (questions without an answer,
counted wrong).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.pope import is_yes
from pipelines.benchmarks.records import (
    answers_by_id,
    id_key,
    loader_questions,
    metric_key,
    ratio,
    read_jsonl_lines,
    require_fields,
    warn_missing,
)
from pipelines.benchmarks.vqa_accuracy import (
    HUMAN_ANSWERS,
    normalize_answer,
    vqa_accuracy,
)

OPTION_LETTER = re.compile(r"^\(?([A-Z])(?![A-Za-z])")
YES_NO = ("yes", "no")


def option_letter(text: str) -> str | None:
    """The option letter an answer starts with: "B", "B.", "(B) red", "B) red"; None for anything else."""
    match = OPTION_LETTER.match(text.strip())
    return match.group(1) if match else None


def _exact(prediction: str, truth: Any) -> float:
    return float(normalize_answer(prediction) == normalize_answer(str(truth)))


def _vqa(prediction: str, truth: Any) -> float:
    return vqa_accuracy(prediction, truth)


def _choice(prediction: str, truth: Any) -> float:
    return float(option_letter(prediction) == str(truth).strip().upper())


def _yes_no(prediction: str, truth: Any) -> float:
    return float(("yes" if is_yes(prediction) else "no") == str(truth).strip().lower())


METRICS: dict[str, Callable[[str, Any], float]] = {"exact": _exact, "vqa": _vqa, "choice": _choice,
                                                   "yesno": _yes_no}


class OwnBenchmark(Benchmark):
    """A user's question file under the user's name for it, scored with one of METRICS."""

    def __init__(self, name: str = "own", metric: str = "exact") -> None:
        if metric not in METRICS:
            raise BenchmarkDataError(f"benchmark {name}: metric {metric!r} is unknown; choose one of "
                                     f"{', '.join(METRICS)}")
        self.name, self.metric = name, metric

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        questions = self.load_questions(questions_path)
        truth = self._ground_truth(questions, questions_path, annotations)
        predictions = answers_by_id(answers)
        scores: list[float] = []
        by_category: dict[str, list[float]] = defaultdict(list)
        missing = 0
        for question in questions:
            key = id_key(question.question_id)
            answer = predictions.get(key)
            missing += answer is None
            score = 0.0 if answer is None else METRICS[self.metric](answer["text"], truth[key])
            scores.append(score)
            if "category" in question.metadata:
                by_category[metric_key(question.metadata["category"])].append(score)
        warn_missing(self.name, missing, len(scores))
        metrics: dict[str, float] = {"accuracy": ratio(sum(scores), len(scores))}
        for category, category_scores in sorted(by_category.items()):
            metrics[f"category/{category}"] = ratio(sum(category_scores), len(category_scores))
        metrics.update(questions=len(scores), missing=missing)
        return metrics

    def _ground_truth(self, questions: list[EvalQuestion], questions_path: Path,
                      annotations: Path | None) -> dict[str, Any]:
        """question_id -> the truth this metric needs, from the annotation file or the question rows."""
        field = "answers" if self.metric == "vqa" else "answer"
        source = annotations if annotations is not None else questions_path
        truth = {}
        for where, row in read_jsonl_lines(source):
            require_fields(row, ("question_id", field), where)
            truth[id_key(row["question_id"])] = self._checked(row[field], where)
        missing = [question.question_id for question in questions if id_key(question.question_id) not in truth]
        if missing:
            raise BenchmarkDataError(f"{source}: no {field!r} for question_id {', '.join(map(str, missing[:5]))}")
        return truth

    def _checked(self, value: Any, where: str) -> Any:
        if self.metric == "vqa":
            if not isinstance(value, list) or len(value) != HUMAN_ANSWERS:
                raise BenchmarkDataError(f"{where}: metric vqa needs 'answers', a list of {HUMAN_ANSWERS} human "
                                         f"answers, got {value!r}")
            return [str(answer) for answer in value]
        if self.metric == "choice" and option_letter(str(value)) != str(value).strip().upper():
            raise BenchmarkDataError(f"{where}: metric choice needs an option letter as the answer, got {value!r}")
        if self.metric == "yesno" and str(value).strip().lower() not in YES_NO:
            raise BenchmarkDataError(f"{where}: metric yesno needs 'yes' or 'no' as the answer, got {value!r}")
        return value

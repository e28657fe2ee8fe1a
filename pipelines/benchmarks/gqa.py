"""GQA (testdev-balanced): convert_gqa_for_eval.py + the official GQA eval.py accuracy.

Questions: LLaVA's `llava_gqa_testdev_balanced.jsonl` ({question_id, image, text}, text ending with the
short-answer suffix). The prediction is `text.rstrip('.').lower()` (the converter), compared by raw exact string
equality with the annotation's answer (eval.py). `write_submission` writes the converter's
`testdev_balanced_predictions.json` ([{questionId, prediction}], one per answer line) for the official tool.

Annotations (`--annotations`): `testdev_balanced_questions.json` ({questionId: {answer, isBalanced, types}}).
Questions of the question file are scored (those with isBalanced false are skipped, as eval.py skips them);
eval.py stops with a KeyError on a question that has no prediction, we count it as wrong and report `missing`.
`open` holds the questions whose types.structural is "query" and `binary` every other one (verify, logical,
choose, compare), as eval.py splits them; both are always reported. So are eval.py's detailed figures where the
annotation has their fields: accuracy per structural and semantic type (`structural/<type>`, `semantic/<type>`),
per number of reasoning steps (`steps/<n>`) and of question words (`words/<n>`), and `distribution`, the
chi-square of the predicted against the gold answer distribution per global group, / 100 (lower is better).
Validity, plausibility, consistency and grounding need the scene graphs and choices files, which LLaVA's
evaluation does not use; they are not computed.
"""

from __future__ import annotations

import json
from collections import defaultdict
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
OPEN_STRUCTURE = "query"  # eval.py: open iff structural == 'query', binary otherwise
STEPS_NOT_COUNTED = ("exist", "query: name", "choose name")


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


def _groups(entry: dict[str, Any]) -> list[str]:
    """The score lists eval.py adds a balanced question to: accuracy, open or binary, and the detailed ones whose
    fields the annotation has (structural and semantic type, reasoning steps, words)."""
    types = entry.get("types") or {}
    groups = ["accuracy", "open" if types.get("structural") == OPEN_STRUCTURE else "binary"]
    for kind in ("structural", "semantic"):
        if types.get(kind) is not None:
            groups.append(f"{kind}/{types[kind]}")
    if isinstance(entry.get("semantic"), list):
        groups.append(f"steps/{reasoning_steps(entry['semantic'])}")
    if isinstance(entry.get("question"), str):
        groups.append(f"words/{len(entry['question'].split())}")
    return groups


def reasoning_steps(program: list[dict[str, Any]]) -> int:
    """eval.py's getStepsNum: the operations of the semantic program that are not a plain exist/name lookup."""
    return sum(1 for step in program
               if not any(skipped in f"{step['operation']}: {step['argument']}" for skipped in STEPS_NOT_COUNTED))


def chi_square(gold: dict[str, dict[str, int]], predicted: dict[str, dict[str, int]]) -> float:
    """eval.py's chiSquare: per global group, sum (o - e)^2 / e over the gold answers, weighted by group size."""
    total_score, total = 0.0, 0
    for group, answers in gold.items():
        score, overall = 0.0, 0
        for answer, expected in answers.items():
            observed = predicted.get(group, {}).get(answer, 0)
            score += (observed - expected) ** 2 / expected
            overall += expected
        total_score += score * overall
        total += overall
    return total_score / total


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
        # eval.py prints binary and open even when empty (as 0.00)
        correct: dict[str, list[bool]] = defaultdict(list, {"accuracy": [], "binary": [], "open": []})
        distribution: dict[str, dict[str, dict[str, int]]] = {"gold": {}, "predicted": {}}
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
            predicted = None if answer is None else gqa_prediction(answer["text"])
            right = predicted == entry["answer"]
            for group in _groups(entry):
                correct[group].append(right)
            global_group = (entry.get("groups") or {}).get("global")
            if global_group is not None:
                for side, value in (("gold", entry["answer"]), ("predicted", predicted)):
                    counts = distribution[side].setdefault(global_group, defaultdict(int))
                    counts[value] += 1
        warn_missing(self.name, missing, len(correct["accuracy"]))
        metrics: dict[str, float] = {name: 100.0 * ratio(sum(flags), len(flags))
                                     for name, flags in sorted(correct.items())}
        if distribution["gold"]:
            metrics["distribution"] = chi_square(distribution["gold"], distribution["predicted"]) / 100
        metrics.update(questions=len(correct["accuracy"]), missing=missing)
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        check_answers(answers)
        predictions = [{"questionId": answer["question_id"], "prediction": gqa_prediction(answer["text"])}
                       for answer in answers]
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        destination.write_text(json.dumps(predictions))
        return destination

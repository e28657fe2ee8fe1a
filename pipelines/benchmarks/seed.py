"""SEED-Bench: convert_seed_for_submission.py's accuracies and upload file.

Questions: LLaVA's `llava-seed-bench.jsonl` ({question_id, image, text, category}; video questions come as one
extracted frame). Annotations (`--annotations`): `SEED-Bench.json` ({"questions": [{question_id, question_type_id,
answer, data_type}], "question_type": {name: id}}).

A question is right iff the answer text **equals** its answer letter exactly (no stripping or case folding).
Every annotated question counts; one with no answer line is wrong. Metrics (percent): `accuracy` over all
questions, `image_accuracy` / `video_accuracy` over those data types (LLaVA reports the image one), and one per
question type, named after the type (`type/scene_understanding`, ...). An annotated question is looked up as the
converter looks it up: its id through int() where it converts ("007" -> 7), against the answer lines' question_id
as written (an int 7 matches, a string "7" does not). `write_submission` writes the converter's upload jsonl: one
{question_id, prediction} per question of SEED-Bench.json, in its order, with the annotation's own question_id
(a string such as "000"), found as the id itself and else through int(); a question without an answer is an error
naming it, where upstream's lookup fails.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    annotation_file,
    check_answers,
    id_key,
    loader_questions,
    metric_key,
    numbered,
    ratio,
    read_json,
    require_fields,
    warn_missing,
)

SUBMISSION_NAME = "seed_submission.jsonl"
DATA_TYPES = ("image", "video")


class SEEDBenchmark(Benchmark):
    name = "seed"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        path, rows, type_names = _annotations(annotations)
        predictions = _predictions(answers)
        by_type: dict[str, list[bool]] = defaultdict(list)
        by_data_type: dict[str, list[bool]] = defaultdict(list)
        missing = 0
        for where, row in numbered(rows, path):
            require_fields(row, ("question_id", "question_type_id", "answer"), where)
            answer = predictions.get(_converter_key(row["question_id"]))
            missing += answer is None
            right = answer is not None and answer["text"] == row["answer"]
            by_type[type_names.get(id_key(row["question_type_id"]), id_key(row["question_type_id"]))].append(right)
            by_data_type[str(row.get("data_type", "image"))].append(right)
        warn_missing(self.name, missing, len(rows))
        everything = [flag for flags in by_type.values() for flag in flags]
        metrics: dict[str, float] = {"accuracy": 100.0 * ratio(sum(everything), len(everything))}
        for data_type in DATA_TYPES:
            if by_data_type.get(data_type):
                metrics[f"{data_type}_accuracy"] = 100.0 * ratio(sum(by_data_type[data_type]),
                                                                 len(by_data_type[data_type]))
        for type_name, flags in sorted(by_type.items()):
            metrics[f"type/{metric_key(type_name)}"] = 100.0 * ratio(sum(flags), len(flags))
        metrics.update(questions=len(everything), missing=missing)
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        """convert_seed_for_submission.py's upload: every question of SEED-Bench.json, under its own id."""
        path, rows, _ = _annotations(annotations)
        predictions = _predictions(answers)
        lines, unanswered = [], []
        for where, row in numbered(rows, path):
            require_fields(row, ("question_id",), where)
            question_id = row["question_id"]
            answer = predictions.get(question_id, predictions.get(_converter_key(question_id)))
            if answer is None:
                unanswered.append(str(question_id))
                continue
            lines.append(json.dumps({"question_id": question_id, "prediction": answer["text"]}))
        if unanswered:
            raise BenchmarkDataError(f"{path}: {len(unanswered)} question(s) have no answer (question_id "
                                     f"{', '.join(unanswered[:5])}); the SEED upload needs every question")
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        destination.write_text("".join(line + "\n" for line in lines))
        return destination


def _predictions(answers: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """question_id as written in the answer line (int or string) -> answer; the last line wins."""
    check_answers(answers)
    return {answer["question_id"]: answer for answer in answers}


def _converter_key(question_id: Any) -> Any:
    """The converter's `int(question_id)`, falling back to the id itself when it is not a number."""
    try:
        return int(question_id)
    except (TypeError, ValueError):
        return question_id


def _annotations(annotations: Path | None) -> tuple[Path, list[Any], dict[str, str]]:
    path = annotation_file(annotations, "seed", "SEED-Bench.json", "SEED-Bench.json (or the folder holding it)")
    loaded = read_json(path)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("questions"), list):
        raise BenchmarkDataError(f"{path}: expected {{\"questions\": [...], \"question_type\": {{name: id}}}}")
    type_names = {id_key(type_id): name for name, type_id in (loaded.get("question_type") or {}).items()}
    return path, loaded["questions"], type_names

"""RefCOCO / RefCOCO+ / RefCOCOg grounding: box accuracy at IoU >= 0.5.

Neither LLaVA-SP nor upstream LLaVA-1.5 ships a grounding evaluation, so this module states its
own assumptions:

- Question file (JSON lines, one referring expression each): {question_id, image, bbox, width, height} plus either
  `text` (the full prompt, used as is) or `expression` (put into LLaVA-1.5's training phrasing, PROMPT_TEMPLATE).
  `bbox` is the ground truth in COCO's [x, y, w, h] pixels of the original image (as the refer API gives it);
  width/height are the original image's size.
- The answer's box is the first "[x1, y1, x2, y2]" in its text. If all four values are <= 1 it is LLaVA-1.5's
  normalised form: fractions of the *padded square* image (side max(w, h), the original pasted at
  ((side - w) // 2, (side - h) // 2), as pad-to-square does), converted back to original pixels. Otherwise the
  values are taken as pixels of the original image.
- IoU is over continuous areas (no +1 pixel). A box with x2 <= x1 or y2 <= y1, or an answer with no box, has IoU 0
  (`unparsed` counts answers with no box). `accuracy` = fraction of questions with IoU >= 0.5; `mean_iou` too.
  An unanswered question scores 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    answers_by_id,
    id_key,
    ratio,
    read_jsonl_lines,
    require_fields,
    warn_missing,
)

PROMPT_TEMPLATE = "Please provide the bounding box coordinate of the region this sentence describes: {expression}."
IOU_THRESHOLD = 0.5
NUMBER = r"\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*"
BOX = re.compile(r"\[" + ",".join([NUMBER] * 4) + r"\]")

Box = tuple[float, float, float, float]  # (x1, y1, x2, y2) in original-image pixels


def parse_box(text: str) -> Box | None:
    """The first [x1, y1, x2, y2] in an answer, as written (normalised or pixels)."""
    match = BOX.search(text)
    return None if match is None else tuple(float(value) for value in match.groups())  # type: ignore[return-value]


def to_pixels(box: Box, width: int, height: int) -> Box:
    """Normalised boxes (every value <= 1) are fractions of the padded square image; others are pixels already."""
    if max(box) > 1:
        return box
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    x1, y1, x2, y2 = box
    return (x1 * side - left, y1 * side - top, x2 * side - left, y2 * side - top)


def iou(first: Box, second: Box) -> float:
    if first[2] <= first[0] or first[3] <= first[1] or second[2] <= second[0] or second[3] <= second[1]:
        return 0.0
    overlap_w = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    overlap_h = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    overlap = overlap_w * overlap_h
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1]) - overlap
    return ratio(overlap, union)


class RefCOCOBenchmark(Benchmark):
    name = "refcoco"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        questions = []
        for where, row in read_jsonl_lines(questions_path):
            _check_row(row, where)
            prompt = row["text"] if "text" in row else PROMPT_TEMPLATE.format(expression=row["expression"])
            metadata = {key: value for key, value in row.items() if key not in ("question_id", "image", "text")}
            questions.append(EvalQuestion(question_id=row["question_id"], prompt=str(prompt), image=row["image"],
                                          metadata=metadata))
        return questions

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        predictions = answers_by_id(answers)
        ious, missing, unparsed = [], 0, 0
        for where, row in read_jsonl_lines(questions_path):
            _check_row(row, where)
            x, y, w, h = (float(value) for value in row["bbox"])
            answer = predictions.get(id_key(row["question_id"]))
            missing += answer is None
            box = None if answer is None else parse_box(answer["text"])
            unparsed += answer is not None and box is None
            ious.append(0.0 if box is None else iou(to_pixels(box, int(row["width"]), int(row["height"])),
                                                    (x, y, x + w, y + h)))
        warn_missing(self.name, missing, len(ious))
        return {"accuracy": ratio(sum(value >= IOU_THRESHOLD for value in ious), len(ious)),
                "mean_iou": ratio(sum(ious), len(ious)), "questions": len(ious), "missing": missing,
                "unparsed": unparsed}


def _check_row(row: dict[str, Any], where: str) -> None:
    require_fields(row, ("question_id", "image", "bbox", "width", "height"), where)
    if "text" not in row and "expression" not in row:
        raise BenchmarkDataError(f"{where}: needs 'text' (the prompt) or 'expression' (the referring expression)")
    bbox = row["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise BenchmarkDataError(f"{where}: 'bbox' must be [x, y, w, h] numbers (COCO pixels), got {bbox!r}")
    for key in ("width", "height"):
        if not isinstance(row[key], int) or row[key] <= 0:
            raise BenchmarkDataError(f"{where}: {key!r} must be a positive integer (pixels), got {row[key]!r}")

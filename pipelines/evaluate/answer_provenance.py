"""What made an answer file, so that a re-run resumes only answers made by the same model, questions and settings.

An evaluation appends to `<output_dir>/<model>/<benchmark>/answers.jsonl` and resumes it when run again. A model
name is only a label: retrained weights, another question file or another image setting under the same names
would otherwise be mixed into one file and scored together. Beside the answers, `answers.provenance.json` records
the content digests of the model directory and of the question file, the image folder and the generation
settings; answers are reused only when all of them are unchanged, and otherwise set aside, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "answers.provenance.json"


def file_digest(path: Path) -> str:
    """sha256 of a file, read in chunks (a 7B model's weights are never held in memory)."""
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def directory_digest(directory: Path) -> str:
    """sha256 over every file of a model directory (weights, configs, tokenizer, processor: all decide answers),
    by relative path, so a copy elsewhere has the same digest."""
    digest = hashlib.sha256()
    for path in sorted(item for item in Path(directory).rglob("*") if item.is_file()):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class AnswerProvenance:
    """Everything that decides the answer lines of one model on one benchmark."""

    model_sha256: str
    questions_sha256: str
    images: str  # the image folder the question file's paths are relative to
    generation: dict[str, Any]  # max_new_tokens cap, image_aspect, image_resize
    model_dir: str = ""  # where the model was read from: shown, not compared
    questions: str = ""  # where the question file was read from: shown, not compared

    def identity(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key not in ("model_dir", "questions")}

    def differences(self, other: AnswerProvenance) -> list[str]:
        mine, theirs = self.identity(), other.identity()
        return [f"{key} {theirs[key]!r} -> {mine[key]!r}" for key in mine if mine[key] != theirs[key]]


def read_provenance(directory: Path) -> AnswerProvenance | None:
    path = Path(directory) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return AnswerProvenance(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def claim_answers(answers_path: Path, provenance: AnswerProvenance) -> str:
    """Make `answers_path` belong to `provenance`: keep it when it was made by the same inputs, else move it aside
    (answers.jsonl.stale-<time>, with a warning). Returns the sentence it logs about what happened."""
    directory = answers_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    previous = read_provenance(directory)
    if answers_path.is_file() and answers_path.stat().st_size:
        if previous is not None and not provenance.differences(previous):
            lines = sum(1 for line in answers_path.read_text().splitlines() if _complete(line))
            message = (f"resuming {lines} answers from {answers_path} (same model sha256 "
                       f"{provenance.model_sha256[:12]}, question file sha256 {provenance.questions_sha256[:12]} and "
                       "settings)")
            logger.info("%s", message)
            return message
        stale = _free_name(answers_path.with_name(f"{answers_path.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}"))
        answers_path.rename(stale)
        reason = ("no record of what made them" if previous is None
                  else "made by other inputs: " + "; ".join(provenance.differences(previous)))
        message = f"not reusing the answers in {answers_path}, {reason}; moved to {stale.name}, starting over"
        logger.warning("%s", message)
    else:
        message = f"no answers to resume in {directory}: starting"
    (directory / PROVENANCE_FILE).write_text(json.dumps(asdict(provenance), indent=2, sort_keys=True) + "\n")
    return message


def _free_name(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when it is taken (rename would silently replace it)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def _complete(line: str) -> bool:
    """A whole answer line; one cut short by an interruption is asked again."""
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True

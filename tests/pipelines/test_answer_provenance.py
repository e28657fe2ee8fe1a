"""Resumed answers belong to the model, question file and settings that made them; anything else starts over."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.evaluate.answer_provenance import (
    PROVENANCE_FILE,
    AnswerProvenance,
    claim_answers,
    directory_digest,
    file_digest,
)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 100)
    (directory / "config.json").write_text('{"sp_variant": "cropping"}')
    return directory


def _provenance(model_dir: Path, questions: Path, **generation) -> AnswerProvenance:
    return AnswerProvenance(directory_digest(model_dir), file_digest(questions), "/data/images",
                            {"max_new_tokens": 0, "image_aspect": "pad", "image_resize": "pil", **generation},
                            model_dir=str(model_dir), questions=str(questions))


def _answers(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question_id": index, "text": "x"}) + "\n" for index in range(count)))


def test_the_model_digest_follows_the_weights_not_the_name_or_place(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "renamed")
    assert directory_digest(copy) == directory_digest(model_dir)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[1000] ^= 1  # retrained: one bit differs
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert directory_digest(copy) != directory_digest(model_dir)


def test_answers_are_resumed_only_from_the_same_inputs(model_dir, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question_id": 0, "text": "q"}\n')
    answers = tmp_path / "out" / "answers.jsonl"
    provenance = _provenance(model_dir, questions)

    assert claim_answers(answers, provenance) == f"no answers to resume in {answers.parent}: starting"
    _answers(answers, 3)
    assert claim_answers(answers, provenance).startswith(f"resuming 3 answers from {answers} (same model sha256 ")
    assert answers.is_file()

    for changed, named in [(replace(provenance, model_sha256="0" * 64), "model_sha256"),
                           (_provenance(model_dir, questions, image_aspect="square"), "generation"),
                           (replace(provenance, questions_sha256="1" * 64), "questions_sha256")]:
        _answers(answers, 3)
        (answers.parent / PROVENANCE_FILE).write_text(json.dumps(provenance.__dict__))
        message = claim_answers(answers, changed)
        assert message.startswith(f"not reusing the answers in {answers}, made by other inputs: {named} ")
        assert not answers.exists()  # moved aside, never mixed into the new run's answers
        stale = sorted(answers.parent.glob("answers.jsonl.stale-*"))
        assert stale and len(stale[-1].read_text().splitlines()) == 3
        for item in stale:
            item.unlink()

    _answers(answers, 2)
    (answers.parent / PROVENANCE_FILE).unlink()
    assert "no record of what made them" in claim_answers(answers, provenance)  # answers of an older version


def test_a_moved_model_or_question_file_with_the_same_content_still_resumes(model_dir, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question_id": 0, "text": "q"}\n')
    answers = tmp_path / "out" / "answers.jsonl"
    claim_answers(answers, _provenance(model_dir, questions))
    _answers(answers, 1)
    moved_questions = Path(shutil.copy(questions, tmp_path / "moved.jsonl"))
    moved_model = shutil.copytree(model_dir, tmp_path / "moved-model")
    assert claim_answers(answers, _provenance(moved_model, moved_questions)).startswith("resuming 1 answers")

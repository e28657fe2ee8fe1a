"""Your own benchmark: a LLaVA-format question file scored with the metric you choose, per category."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.benchmarks import (
    BenchmarkDataError,
    UnknownBenchmarkError,
    benchmark_for,
)
from pipelines.benchmarks.own import option_letter
from pipelines.benchmarks.score_cli import main as score_main
from pipelines.config import ConfigError, load_config
from pipelines.evaluate.config import EvaluateConfig


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _answer(question_id, text: str) -> dict:
    return {"question_id": question_id, "prompt": "", "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}


@pytest.mark.parametrize("text, letter", [("B", "B"), ("B.", "B"), ("(C) a red circle", "C"), ("D) four", "D"),
                                          (" A", "A"), ("Blue", None), ("b", None), ("The answer is B", None)])
def test_option_letter(text, letter):
    assert option_letter(text) == letter


CASES = {
    # metric: [(truth, prediction, score)], the truth in the question rows
    "exact": [("two", "2", 1.0), ("red", "Red.", 1.0), ("the cat", "cat", 1.0), ("t-shirt", "T-shirt", 1.0),
              ("red", "dark red", 0.0)],
    "choice": [("B", "B", 1.0), ("B", "(B) blue", 1.0), ("A", "B.", 0.0), ("C", "c", 0.0)],
    "yesno": [("yes", "Yes, there is.", 1.0), ("no", "No.", 1.0), ("no", "There is not a dog.", 1.0),
              ("yes", "no", 0.0)],
}


@pytest.mark.parametrize("metric", list(CASES))
def test_each_metric_scores_per_category(metric, tmp_path):
    cases = CASES[metric]
    questions = _write_jsonl(tmp_path / "mine.jsonl", [
        {"question_id": index, "image": f"{index}.png", "text": "q", "answer": truth,
         "category": "first" if index < 2 else "rest"} for index, (truth, _, _) in enumerate(cases)])
    answers = [_answer(index, prediction) for index, (_, prediction, _) in enumerate(cases)]
    metrics = benchmark_for("mine", metric).evaluate(answers, questions, None)
    expected = [score for _, _, score in cases]
    assert metrics["accuracy"] == pytest.approx(sum(expected) / len(expected))
    assert metrics["category/first"] == pytest.approx(sum(expected[:2]) / 2)
    assert metrics["category/rest"] == pytest.approx(sum(expected[2:]) / len(expected[2:]))
    assert (metrics["questions"], metrics["missing"], metrics["unanswered"]) == (len(cases), 0, 0)


def test_vqa_metric_with_ground_truth_in_an_annotation_file(tmp_path):
    questions = _write_jsonl(tmp_path / "mine.jsonl", [{"question_id": "a", "image": "a.png", "text": "q"},
                                                       {"question_id": "b", "image": "b.png", "text": "q"}])
    annotations = _write_jsonl(tmp_path / "truth.jsonl", [
        {"question_id": "a", "answers": ["two"] * 3 + ["three"] * 7},
        {"question_id": "b", "answers": ["red"] * 10}])
    metrics = benchmark_for("mine", "vqa").evaluate([_answer("a", "2"), _answer("b", "Blue")], questions, annotations)
    assert metrics["accuracy"] == pytest.approx(0.9 / 2)  # "2" = "two" for 3 of 10 humans: 0.9; "blue": 0
    with pytest.raises(BenchmarkDataError, match=r"truth.jsonl:1: metric vqa needs 'answers', a list of 10"):
        _write_jsonl(annotations, [{"question_id": "a", "answers": ["two"]}, {"question_id": "b", "answers": []}])
        benchmark_for("mine", "vqa").evaluate([], questions, annotations)


def test_bad_ground_truth_and_bad_names_are_named(tmp_path):
    questions = _write_jsonl(tmp_path / "mine.jsonl", [{"question_id": 1, "image": "a.png", "text": "q",
                                                        "answer": "maybe"},
                                                       {"question_id": 2, "image": "a.png", "text": "q"}])
    with pytest.raises(BenchmarkDataError, match=r"mine.jsonl:1: metric yesno needs 'yes' or 'no'"):
        benchmark_for("mine", "yesno").evaluate([], questions, None)
    with pytest.raises(BenchmarkDataError, match=r"mine.jsonl:2: missing field 'answer'"):
        benchmark_for("mine", "exact").evaluate([], questions, None)
    with pytest.raises(UnknownBenchmarkError, match="pope is a paper benchmark"):
        benchmark_for("pope", "exact")
    with pytest.raises(BenchmarkDataError, match="metric 'f1' is unknown; choose one of exact, vqa, choice, yesno"):
        benchmark_for("mine", "f1")
    with pytest.raises(ConfigError) as error:
        load_config(EvaluateConfig, None, ["benchmarks=[{name: mine, metric: f1, questions: q.jsonl}, "
                                           "{name: gqa, metric: exact, questions: q.jsonl}, {name: other, metric: vqa}]"])
    message = str(error.value)
    assert "benchmark mine: metric 'f1' is unknown" in message
    assert "benchmark gqa: a paper benchmark is scored by its own rules" in message
    assert "benchmark other: questions= is required" in message


def test_the_score_command_takes_the_metric(tmp_path, capsys):
    questions = _write_jsonl(tmp_path / "mine.jsonl", [{"question_id": 1, "image": "a.png", "text": "q",
                                                        "answer": "B"}])
    answers = _write_jsonl(tmp_path / "answers.jsonl", [_answer(1, "(B) blue")])
    assert score_main(["benchmark=mine", "metric=choice", f"questions={questions}", f"answers={answers}"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0

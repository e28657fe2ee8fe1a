"""pipelines/benchmarks: the shared contract (questions, answer lines, registry, errors), EvalAI normalisation and
soft VQA accuracy (VQAv2, TextVQA, VizWiz), GQA, and the score CLI. Every expected number is worked out by hand
in the comments from the official scripts' rules, not read back from the code."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.benchmarks import (
    BENCHMARKS,
    BenchmarkDataError,
    EvalQuestion,
    answer_record,
    get_benchmark,
)
from pipelines.benchmarks.records import read_jsonl
from pipelines.benchmarks.score_cli import main as score_main
from pipelines.benchmarks.textvqa import question_from_prompt
from pipelines.benchmarks.vqa_accuracy import (
    human_answer_scores,
    normalize_answer,
    vizwiz_api_accuracy,
    vqa_accuracy,
    vqa_api_accuracy,
)

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = "\nAnswer the question using a single word or phrase."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def answer(question_id, text: str, prompt: str = "") -> dict:
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m",
            "metadata": {}}


# ---------------------------------------------------------------------------------------------------------------
# Contract: questions, answer lines, registry, errors
# ---------------------------------------------------------------------------------------------------------------

def test_registry_names_every_benchmark_and_rejects_unknown_ones_listing_the_known():
    assert sorted(BENCHMARKS) == ["gqa", "llava_bench", "mmbench", "mmbench_cn", "mme", "mmvet", "mmvp", "pope",
                                  "refcoco", "scienceqa", "seed", "synthetic", "textvqa", "vizwiz", "vqav2"]
    assert all(benchmark.name == name for name, benchmark in BENCHMARKS.items())
    with pytest.raises(ValueError, match=r"unknown benchmark 'vqa2'; known: gqa, llava_bench, .*vqav2"):
        get_benchmark("vqa2")


def test_answer_record_is_llava_answer_line_with_stripped_text_and_unique_ids():
    question = EvalQuestion(question_id=7, prompt="What is it?" + SUFFIX, image="a.jpg",
                            metadata={"category": "x"})
    first, second = answer_record(question, "  A cat.\n", "llava-sp"), answer_record(question, "dog", "llava-sp")
    assert set(first) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert (first["question_id"], first["prompt"], first["text"], first["model_id"], first["metadata"]) == (
        7, "What is it?" + SUFFIX, "A cat.", "llava-sp", {})
    assert len(first["answer_id"]) == 32 and first["answer_id"] != second["answer_id"]


def test_answer_record_uses_recorded_prompt_and_lifts_mmbench_round_fields():
    question = EvalQuestion(question_id=3, prompt="Q\nA. x\nB. y\nAnswer with the option's letter.",
                            recorded_prompt="Q\nA. x\nB. y",
                            metadata={"round_id": 1, "options": ["y", "x"], "option_char": ["B", "A"]})
    record = answer_record(question, "A", "m")
    assert record["prompt"] == "Q\nA. x\nB. y"
    assert (record["round_id"], record["options"], record["option_char"]) == (1, ["y", "x"], ["B", "A"])
    assert record["metadata"] == {}


def test_loader_questions_keep_text_as_prompt_and_other_fields_as_metadata(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": "a1", "image": "x.jpg", "text": "Is it red?" + SUFFIX, "category": "colour"}])
    (question,) = get_benchmark("vqav2").load_questions(path)
    assert question == EvalQuestion(question_id="a1", prompt="Is it red?" + SUFFIX, image="x.jpg",
                                    max_new_tokens=128, metadata={"category": "colour"})


def test_bad_files_give_one_line_errors_naming_file_line_and_problem(tmp_path):
    broken = tmp_path / "q.jsonl"
    broken.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": \n')
    with pytest.raises(BenchmarkDataError, match=r"q\.jsonl:2: not valid JSON"):
        read_jsonl(broken)
    no_text = tmp_path / "n.jsonl"
    no_text.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2}\n')  # blank lines still count
    with pytest.raises(BenchmarkDataError, match=r"n\.jsonl:3: missing field 'text' \(has: question_id\)"):
        get_benchmark("gqa").load_questions(no_text)
    with pytest.raises(BenchmarkDataError, match=r"nope\.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")
    questions = write_jsonl(tmp_path / "s.jsonl", [{"question_id": 0, "text": "q", "answer": "a",
                                                    "question_type": "t"}])
    with pytest.raises(BenchmarkDataError, match=r"answer 2: missing field 'text'"):
        get_benchmark("synthetic").score([answer(0, "a"), {"question_id": 1}], questions, None)


# ---------------------------------------------------------------------------------------------------------------
# EvalAI normalisation and soft accuracy
# ---------------------------------------------------------------------------------------------------------------

NORMALISED = [
    ("Two", "2"),  # number words -> digits
    ("Ten.", "10"),
    ("none", "0"),
    ("The dog.", "dog"),  # articles dropped, trailing period removed
    ("a red car", "red car"),
    ("an apple?", "apple"),  # '?' deleted first
    ("the", ""),
    ("(a)", ""),  # parentheses become spaces, then "a" is an article
    ("dont", "don't"),  # contractions map
    ("isnt it?", "isn't it"),
    ("Im", "im"),  # upper-case keys of the map never match: the text is lower-cased first
    ("somebody'd", "somebodyd"),  # the map's reversed entry, kept
    ("It's", "it 's"),  # "'s" is split off
    ("what's", "what 's"),
    ("3.5", "3.5"),  # a period before a digit stays
    ("e.g.", "eg"),
    ("Mr. Smith", "mr smith"),
    ("1,000", "1000"),  # commas deleted
    ("x, y", "x y"),
    ("hello-world", "hello world"),  # punctuation with no space next to it becomes a space
    ("hello - world", "hello world"),  # ... and is deleted when a space is next to it
    ("left/right", "left right"),
    ("2 + 2", "2 2"),
    ("yes!", "yes"),
    ("10.5%", "10.5%"),  # '%' and '$' are not in the list
    ("$5", "$5"),
    ("Hello\tWorld", "hello world"),
    ("." * 40, "." * 8),  # re.UNICODE passed as count: only 32 periods are removed
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_evalai_normaliser_matches_upstream_rules(raw, expected):
    assert normalize_answer(raw) == expected


def test_soft_accuracy_averages_the_ten_leave_one_out_subsets():
    humans = ["2", "two", "Two", "3", "3", "3", "3", "three", "four", "4"]  # normalised: 2 x3, 3 x5, 4 x2
    scores = human_answer_scores(humans)
    # "2": left out one of its 3 -> 2/3, else 3/3 -> (3*2/3 + 7*1) / 10 = 0.9; "4": (2*1/3 + 8*2/3) / 10 = 0.6
    assert scores == pytest.approx({"2": 0.9, "3": 1.0, "4": 0.6}, abs=1e-12)
    assert vqa_accuracy("Two.", humans) == pytest.approx(0.9, abs=1e-12)
    assert vqa_accuracy("five", humans) == 0.0
    assert vqa_accuracy("x", ["x"] + ["y"] * 9) == pytest.approx(0.3, abs=1e-12)  # 9 subsets of 1/3, one of 0
    with pytest.raises(ValueError, match="expected 10 human answers, got 9"):
        vqa_accuracy("x", ["x"] * 9)


# ---------------------------------------------------------------------------------------------------------------
# VQAv2
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def vqav2_files(tmp_path):
    questions = write_jsonl(tmp_path / "llava_vqav2.jsonl", [
        {"question_id": qid, "image": f"COCO_{qid}.jpg", "text": f"Question {qid}?" + SUFFIX} for qid in (1, 2, 3)])
    annotations = write_json(tmp_path / "annotations.json", {"annotations": [
        {"question_id": 1, "answer_type": "number", "question_type": "how many",
         "answers": vqa_answers(["2", "two", "Two", "3", "3", "3", "3", "three", "four", "4"])},
        {"question_id": 2, "answer_type": "yes/no", "question_type": "is the", "answers": vqa_answers(["yes"] * 10)},
        {"question_id": 3, "answer_type": "other", "question_type": "what color is the",
         "answers": vqa_answers(["red"] + ["blue"] * 9)},
    ]})
    return questions, annotations


def vqa_answers(texts: list[str]) -> list[dict]:
    """Human answers as the VQA annotation files hold them."""
    return [{"answer": text, "answer_confidence": "yes", "answer_id": number}
            for number, text in enumerate(texts, start=1)]


def test_vqav2_local_score_is_the_vqa_apis_on_the_uploaded_text(vqav2_files):
    questions, annotations = vqav2_files
    metrics = get_benchmark("vqav2").score([answer(1, "Two."), answer(2, "Yes")], questions, annotations)
    # Uploaded "2" and "yes". q1: humans disagree, so only their punctuation is processed and "two"/"Two" stay
    # words: one "2" -> 9 subsets of 1/3 -> 0.3; q2: 1.0; q3 unanswered: 0 -> 43.33%. Both sides through the
    # EvalAI processor instead, q1 would be 0.9 (63.33%).
    assert metrics == pytest.approx({
        "accuracy": 130 / 3, "number/accuracy": 30.0, "yes_no/accuracy": 100.0, "other/accuracy": 0.0,
        "question_type/how_many": 30.0, "question_type/is_the": 100.0, "question_type/what_color_is_the": 0.0,
        "evalai/accuracy": 190 / 3, "questions": 3, "missing": 1}, abs=1e-9)


# What the VQA API (vqaEval.py) scores for the uploaded (EvalAI-normalised) answer, read from its logic: the
# result's answer gets punctuation + digits/articles, the human answers nothing when all ten agree, punctuation only
# (no lower-casing, no "'s" split) when they differ.
VQA_API_CASES = [
    (["t-shirt"] * 10, "t-shirt", 0.0),  # uploaded "t shirt", humans unprocessed
    (["none"] * 10, "none", 0.0),  # uploaded "0"
    (["dog's"] * 10, "dog's", 0.0),  # uploaded "dog 's"
    (["a lot"] * 10, "a lot", 0.0),  # uploaded "lot"
    (["st. louis"] * 10, "st. louis", 0.0),  # uploaded "st louis"
    (["coca-cola"] * 10, "Coca-Cola", 0.0),  # uploaded "coca cola"
    (["the dog"] * 10, "the dog", 0.0),  # uploaded "dog"
    (["yes"] * 10, "Yes.", 1.0),
    (["t-shirt"] * 4 + ["shirt"] * 6, "t-shirt", 1.0),  # humans differ: "t-shirt" -> "t shirt" on both sides
    (["Red"] * 3 + ["blue"] * 7, "red", 0.0),  # human answers are never lower-cased
    (["two"] * 5 + ["2"] * 5, "two", 1.0),  # "two" -> "2" on the result side only; five humans said "2"
    (["dog's"] * 5 + ["dog"] * 5, "dog's", 0.0),  # "'s" split on the upload, not on the humans
    (["x"] + ["y"] * 9, "x", 0.3),
]


@pytest.mark.parametrize("humans, prediction, official", VQA_API_CASES)
def test_vqa_api_cases(humans, prediction, official):
    assert vqa_api_accuracy(normalize_answer(prediction), vqa_answers(humans)) == pytest.approx(official, abs=1e-12)


def test_the_vqa_api_leaves_out_equal_answer_dicts_together():
    """vqaEval.py drops every dict equal to the left-out one; without answer_id, equal answers go together."""
    assert vqa_api_accuracy("yes", [{"answer": "yes"}] * 10) == 0.0
    assert vqa_api_accuracy("yes", vqa_answers(["yes"] * 10)) == 1.0


# The VizWiz API: the result's answer processed as in the VQA API, the human answers never.
VIZWIZ_API_CASES = [
    (["unanswerable"] * 10, "Unanswerable", 1.0),
    (["t-shirt"] * 4 + ["shirt"] * 6, "t-shirt", 0.0),  # the humans' "t-shirt" is not processed even here
    (["Red"] * 10, "red", 0.0),
    (["2"] * 3 + ["two"] * 7, "two", 0.9),  # uploaded "2": three humans, 2/3 when one of them is left out
]


@pytest.mark.parametrize("humans, prediction, official", VIZWIZ_API_CASES)
def test_vizwiz_api_cases(humans, prediction, official):
    assert vizwiz_api_accuracy(normalize_answer(prediction), humans) == pytest.approx(official, abs=1e-12)


def test_vqav2_submission_normalises_and_fills_missing_with_empty(vqav2_files, tmp_path):
    questions, _ = vqav2_files
    path = get_benchmark("vqav2").write_submission([answer(2, "The Two."), answer(1, "Yes!")], questions,
                                                   tmp_path / "upload")
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "2"},
                                            {"question_id": 3, "answer": ""}]


def test_vqav2_without_annotations_points_to_the_submission(vqav2_files):
    with pytest.raises(BenchmarkDataError, match="vqav2 needs --annotations.*write_submission"):
        get_benchmark("vqav2").score([], vqav2_files[0], None)


# ---------------------------------------------------------------------------------------------------------------
# TextVQA
# ---------------------------------------------------------------------------------------------------------------

def test_textvqa_recovers_the_question_from_each_prompt_layout():
    assert question_from_prompt("What is written?\nReference OCR token: STOP, sign" + SUFFIX) == "what is written?"
    assert question_from_prompt("Reference OCR token: a\nWhat brand?" + SUFFIX) == "what brand?"
    assert question_from_prompt("What brand?" + SUFFIX) == "what brand?"
    assert question_from_prompt("OCR tokens: a b Question: What Colour? Short answer:") == "what colour?"
    with pytest.raises(ValueError, match="prompt has 1 lines"):
        question_from_prompt("no suffix at all")


def test_textvqa_scores_answer_lines_against_image_and_question_keys(tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": "img1", "image": "img1.jpg", "text": "x"}])
    write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"image_id": "img1", "question_id": 11, "question": "What is written?", "answers": ["stop"] * 10},
        {"image_id": "img2", "question_id": 77, "question": "What brand?", "answers": ["nike"] + ["adidas"] * 9},
        {"image_id": "img3", "question_id": 33, "question": "What colour?", "answers": ["red"] * 2 + ["blue"] * 8},
    ]})
    answers = [
        answer("img1", "Stop", "What is written?\nReference OCR token: STOP" + SUFFIX),  # by image_id: 1.0
        answer(77, "nike", "What brand?" + SUFFIX),  # by TextVQA question_id: 0.3
        answer("img3", "red", "OCR tokens: r Question: What colour? Short answer:"),  # 2 of 10: 0.6
    ]
    metrics = get_benchmark("textvqa").score(answers, questions, tmp_path)  # the folder holding the json
    assert metrics == pytest.approx({"accuracy": 190 / 3, "questions": 3, "missing": 0}, abs=1e-9)
    with pytest.raises(BenchmarkDataError, match=r"answer 1 \(question_id img9\): no annotation .*'what\?'"):
        get_benchmark("textvqa").score([answer("img9", "x", "What?" + SUFFIX)], questions, tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# GQA
# ---------------------------------------------------------------------------------------------------------------

def test_gqa_exact_match_after_rstrip_period_and_lower(tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": qid, "image": "n1.jpg", "text": "q" + SUFFIX} for qid in ("q1", "q2", "q3", "q4")])
    annotations = write_json(tmp_path / "testdev_balanced_questions.json", {
        "q1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
        "q2": {"answer": "left", "isBalanced": True, "types": {"structural": "query"}},
        "q3": {"answer": "red", "isBalanced": False, "types": {"structural": "query"}},
        "q4": {"answer": "table", "isBalanced": True, "types": {"structural": "logical"}},
    })
    answers = [answer("q1", "Yes..."), answer("q2", "Left side"), answer("q3", "red")]
    metrics = get_benchmark("gqa").score(answers, questions, annotations)
    # balanced q1 (right), q2 (wrong), q4 (missing); binary = q1, q4; open = q2; q3 is not balanced
    assert metrics == pytest.approx({"accuracy": 100 / 3, "binary": 50.0, "open": 0.0, "structural/verify": 100.0,
                                     "structural/query": 0.0, "structural/logical": 0.0, "questions": 3,
                                     "missing": 1}, abs=1e-9)
    path = get_benchmark("gqa").write_submission(answers, questions, tmp_path / "out")
    assert path.name == "testdev_balanced_predictions.json"
    assert json.loads(path.read_text()) == [{"questionId": "q1", "prediction": "yes"},
                                            {"questionId": "q2", "prediction": "left side"},
                                            {"questionId": "q3", "prediction": "red"}]


def test_gqa_reports_eval_pys_detailed_figures_and_distribution(tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": qid, "image": "n1.jpg", "text": "q" + SUFFIX} for qid in ("q1", "q2")])
    annotations = write_json(tmp_path / "testdev_balanced_questions.json", {
        "q1": {"answer": "red", "isBalanced": True, "question": "What color is the ball?",
               "types": {"structural": "query", "semantic": "attr"}, "groups": {"global": "color"},
               "semantic": [{"operation": "select", "argument": "ball"}, {"operation": "query", "argument": "color"}]},
        "q2": {"answer": "blue", "isBalanced": True, "question": "What color is it?",
               "types": {"structural": "query", "semantic": "attr"}, "groups": {"global": "color"},
               "semantic": [{"operation": "select", "argument": "cup"}, {"operation": "query", "argument": "name"}]},
    })
    metrics = get_benchmark("gqa").score([answer("q1", "Red."), answer("q2", "red")], questions, annotations)
    # steps: "query: name" is not a step, so q1 has 2 and q2 1. Distribution of the "color" group: gold
    # {red: 1, blue: 1}, predicted {red: 2}: (2-1)^2/1 + (0-1)^2/1 = 2, weighted by the group's 2 questions over
    # 2 questions -> 2.0, / 100.
    assert metrics == pytest.approx({
        "accuracy": 50.0, "binary": 0.0, "open": 50.0, "structural/query": 50.0, "semantic/attr": 50.0,
        "steps/2": 100.0, "steps/1": 0.0, "words/5": 100.0, "words/4": 0.0, "distribution": 0.02,
        "questions": 2, "missing": 0}, abs=1e-12)


def test_gqa_counts_every_structural_type_but_query_as_binary(tmp_path):
    """eval.py: open iff types.structural is "query"; choose and compare questions are binary."""
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": qid, "image": "n1.jpg", "text": "q" + SUFFIX} for qid in ("c", "q", "m")])
    annotations = write_json(tmp_path / "testdev_balanced_questions.json", {
        "c": {"answer": "left", "isBalanced": True, "types": {"structural": "choose"}},
        "q": {"answer": "red", "isBalanced": True, "types": {"structural": "query"}},
        "m": {"answer": "no", "isBalanced": True, "types": {"structural": "compare"}},
    })
    metrics = get_benchmark("gqa").score([answer("c", "Left."), answer("q", "blue")], questions, annotations)
    assert metrics == pytest.approx({"accuracy": 100 / 3, "binary": 50.0, "open": 0.0, "structural/choose": 100.0,
                                     "structural/query": 0.0, "structural/compare": 0.0, "questions": 3,
                                     "missing": 1}, abs=1e-9)
    only_two = get_benchmark("gqa").score([answer("c", "Left."), answer("q", "blue")],
                                          write_jsonl(tmp_path / "q2.jsonl", [
                                              {"question_id": qid, "image": "n1.jpg", "text": "q"} for qid in "cq"]),
                                          annotations)
    assert (only_two["binary"], only_two["open"], only_two["accuracy"]) == (100.0, 0.0, 50.0)  # the case


# ---------------------------------------------------------------------------------------------------------------
# VizWiz
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def vizwiz_files(tmp_path):
    questions = write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": 0, "image": "VizWiz_val_0.jpg", "text": "What is this?" + SUFFIX},
        {"question_id": 1, "image": "VizWiz_val_1.jpg", "text": "What colour?" + SUFFIX}])
    annotations = write_json(tmp_path / "val.json", [
        {"image": "VizWiz_val_0.jpg", "answer_type": "unanswerable", "answers": [{"answer": "unanswerable"}] * 10},
        {"image": "VizWiz_val_1.jpg", "answer_type": "other",
         "answers": [{"answer": "white"}] * 3 + [{"answer": "grey"}] * 7}])
    return questions, annotations


def test_vizwiz_local_accuracy_matches_questions_by_image(vizwiz_files):
    questions, annotations = vizwiz_files
    metrics = get_benchmark("vizwiz").score([answer(0, "Unanswerable"), answer(1, "White.")], questions,
                                            annotations)
    # 1.0 and 3-of-10 "white" = 0.9
    assert metrics == pytest.approx({"accuracy": 95.0, "unanswerable/accuracy": 100.0, "other/accuracy": 90.0,
                                     "evalai/accuracy": 95.0, "questions": 2, "missing": 0}, abs=1e-9)


def test_vizwiz_submission_requires_every_answer(vizwiz_files, tmp_path):
    questions, _ = vizwiz_files
    with pytest.raises(BenchmarkDataError, match=r"1 unanswered \(question_id 1\)"):
        get_benchmark("vizwiz").write_submission([answer(0, "x")], questions, tmp_path)
    path = get_benchmark("vizwiz").write_submission([answer(0, "Unanswerable."), answer(1, "The White")],
                                                    questions, tmp_path / "up")
    assert json.loads(path.read_text()) == [{"image": "VizWiz_val_0.jpg", "answer": "unanswerable"},
                                            {"image": "VizWiz_val_1.jpg", "answer": "white"}]


# ---------------------------------------------------------------------------------------------------------------
# The score CLI
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def synthetic_files(tmp_path):
    questions = write_jsonl(tmp_path / "test.jsonl", [
        {"question_id": 0, "image": "images/test_00000.png", "text": "Colour?" + SUFFIX, "answer": "red",
         "question_type": "colour"},
        {"question_id": 1, "image": "images/test_00000.png", "text": "Shape?" + SUFFIX, "answer": "star",
         "question_type": "shape"}])
    answers = write_jsonl(tmp_path / "answers.jsonl", [answer(0, "Red."), answer(1, "circle")])
    return questions, answers


def test_cli_prints_one_json_object_and_exits_zero(synthetic_files):
    questions, answers = synthetic_files
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "benchmark=synthetic", f"questions={questions}", f"answers={answers}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert json.loads(result.stdout) == {"accuracy": 0.5, "colour/accuracy": 1.0, "shape/accuracy": 0.0,
                                         "questions": 2, "missing": 0, "unmatched_answers": 0,
                                         "duplicate_answers": 0, "unanswered": 0}


def test_cli_bad_input_exits_two_with_one_line_on_stderr(synthetic_files, tmp_path):
    questions, _ = synthetic_files
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(answer(0, "red")) + "\n{not json\n")
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "benchmark=synthetic", f"questions={questions}", f"answers={broken}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    expected = f"score: error: {broken}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert result.stderr.strip().splitlines() == [expected]


def test_cli_usage_unknown_benchmark_and_missing_judge_are_one_line_errors(synthetic_files, capsys, monkeypatch):
    questions, answers = synthetic_files
    monkeypatch.delenv("LLAVA_SP_JUDGE_URL", raising=False)
    cases = [
        (["benchmark=synthetic"], "set questions=..., answers=..."),
        (["benchmark=nope", f"questions={questions}", f"answers={answers}"], "unknown benchmark 'nope'; known: gqa,"),
        (["benchmark=mmvet", f"questions={questions}", f"answers={answers}"],
         "mmvet is scored by a GPT judge, which is off by default; set LLAVA_SP_JUDGE_URL"),
    ]
    for argv, message in cases:
        assert score_main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("score: error: ") and message in lines[0], lines


def test_unmatched_repeated_and_missing_answers_are_counted_and_strict_refuses_them(tmp_path, capsys, caplog):
    """An answer to a question not in the file is reported, not silently ignored (GQA, ScienceQA, SEED and VQAv2
    used to skip it); a repeat scores its last line; an unanswered question is wrong; strict=true fails on any."""
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": qid, "image": "n1.jpg", "text": "q" + SUFFIX} for qid in ("q1", "q2", "q3")])
    annotations = write_json(tmp_path / "testdev_balanced_questions.json", {
        qid: {"answer": "left", "isBalanced": True, "types": {"structural": "query"}} for qid in ("q1", "q2", "q3")})
    answers = [answer("q1", "left"), answer("q9", "left"), answer("q2", "right"), answer("q2", "Left.")]
    metrics = get_benchmark("gqa").evaluate(answers, questions, annotations)
    assert metrics["accuracy"] == pytest.approx(200 / 3)  # q1 and q2 (its last line) right, q3 unanswered
    assert (metrics["unmatched_answers"], metrics["duplicate_answers"], metrics["unanswered"]) == (1, 1, 1)

    answers_file = write_jsonl(tmp_path / "answers.jsonl", answers)
    argv = ["benchmark=gqa", f"questions={questions}", f"answers={answers_file}", f"annotations={annotations}"]
    with caplog.at_level(logging.WARNING, logger="pipelines.benchmarks.base"):
        assert score_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["unmatched_answers"] == 1
    assert "1 answer line(s) match no question of the question file, not scored (question_id q9)" in caplog.text
    assert score_main(argv + ["strict=true"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("score: error: gqa: 1 answer line(s) match no question") and "(strict)" in error
    assert "question(s) have no answer and count as wrong (question_id q3)" in error


@pytest.mark.parametrize("name", ["scienceqa", "seed", "vqav2", "pope", "mme", "textvqa", "vizwiz"])
def test_every_benchmark_reports_an_answer_to_an_unknown_question(name, tmp_path):
    """The same accounting for every benchmark, before its scorer sees the answers."""
    if name == "scienceqa":
        questions = write_json(tmp_path / "llava_test_CQM-A.json",
                               [{"id": "known", "conversations": [{"from": "human", "value": "q"}]}])
    else:
        questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": "known", "image": "a.jpg", "text": "q"}])
    benchmark = get_benchmark(name)
    with pytest.raises(BenchmarkDataError, match=r"1 answer line\(s\) match no question .*question_id stranger"):
        benchmark.evaluate([answer("stranger", "yes", "q")], questions, None, strict=True)

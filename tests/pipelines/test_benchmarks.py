"""pipelines/benchmarks: the shared contract (questions, answer lines, registry, errors), EvalAI normalisation and
soft VQA accuracy (VQAv2, TextVQA, VizWiz), GQA, and the score CLI. Every expected number is worked out by hand
in the comments from the official scripts' rules (SPEC.md section 5), not read back from the code."""

from __future__ import annotations

import json
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
    vqa_accuracy,
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
        {"question_id": 1, "answer_type": "number",
         "answers": [{"answer": a} for a in ["2", "two", "Two", "3", "3", "3", "3", "three", "four", "4"]]},
        {"question_id": 2, "answer_type": "yes/no", "answers": [{"answer": "yes"}] * 10},
        {"question_id": 3, "answer_type": "other", "answers": [{"answer": "red"}] + [{"answer": "blue"}] * 9},
    ]})
    return questions, annotations


def test_vqav2_local_soft_accuracy_with_a_missing_answer(vqav2_files):
    questions, annotations = vqav2_files
    metrics = get_benchmark("vqav2").score([answer(1, "Two."), answer(2, "Yes")], questions, annotations)
    # q1 0.9, q2 1.0, q3 unanswered 0 -> 63.33%
    assert metrics == pytest.approx({"accuracy": 190 / 3, "number/accuracy": 90.0, "yes_no/accuracy": 100.0,
                                     "other/accuracy": 0.0, "questions": 3, "missing": 1}, abs=1e-9)


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
    assert metrics == pytest.approx({"accuracy": 100 / 3, "binary": 50.0, "open": 0.0, "questions": 3,
                                     "missing": 1}, abs=1e-9)
    path = get_benchmark("gqa").write_submission(answers, questions, tmp_path / "out")
    assert path.name == "testdev_balanced_predictions.json"
    assert json.loads(path.read_text()) == [{"questionId": "q1", "prediction": "yes"},
                                            {"questionId": "q2", "prediction": "left side"},
                                            {"questionId": "q3", "prediction": "red"}]


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
                                     "questions": 2, "missing": 0}, abs=1e-9)


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
        [sys.executable, "-m", "pipelines.benchmarks.score_cli", "score", "--benchmark", "synthetic",
         "--questions", str(questions), "--answers", str(answers)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert json.loads(result.stdout) == {"accuracy": 0.5, "colour/accuracy": 1.0, "shape/accuracy": 0.0,
                                         "questions": 2, "missing": 0}


def test_cli_bad_input_exits_two_with_one_line_on_stderr(synthetic_files, tmp_path):
    questions, _ = synthetic_files
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(answer(0, "red")) + "\n{not json\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.benchmarks.score_cli", "score", "--benchmark", "synthetic",
         "--questions", str(questions), "--answers", str(broken)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    expected = f"score: error: {broken}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert result.stderr.strip().splitlines() == [expected]


def test_cli_usage_unknown_benchmark_and_missing_judge_are_one_line_errors(synthetic_files, capsys, monkeypatch):
    questions, answers = synthetic_files
    monkeypatch.delenv("LLAVA_SP_JUDGE_URL", raising=False)
    cases = [
        (["score", "--benchmark", "synthetic"], "the following arguments are required: --questions, --answers"),
        (["score", "--benchmark", "nope", "--questions", str(questions), "--answers", str(answers)],
         "unknown benchmark 'nope'; known: gqa,"),
        (["score", "--benchmark", "mmvet", "--questions", str(questions), "--answers", str(answers)],
         "mmvet is scored by a GPT judge, which is off by default; set LLAVA_SP_JUDGE_URL"),
    ]
    for argv, message in cases:
        assert score_main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("score: error: ") and message in lines[0], lines

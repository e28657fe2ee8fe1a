"""pipelines/benchmarks: grounding (RefCOCO), our synthetic split, and the GPT-judged benchmarks (LLaVA-Bench,
MM-Vet) with a fake judge and with the HTTP judge answering through httpx's mock transport (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from pipelines.benchmarks import BenchmarkDataError, get_benchmark
from pipelines.benchmarks.judge import (
    LlavaBenchBenchmark,
    MMVetBenchmark,
    parse_mmvet_grade,
    parse_review_scores,
)
from pipelines.benchmarks.judge_client import (
    JudgeConfig,
    JudgeError,
    JudgeNotConfiguredError,
    OpenAICompatibleJudge,
)
from pipelines.benchmarks.refcoco import iou, parse_box, to_pixels
from pipelines.synthetic import SyntheticConfig, generate_synthetic_dataset

SUFFIX = "\nAnswer the question using a single word or phrase."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer(question_id, text: str) -> dict:
    return {"question_id": question_id, "prompt": "", "text": text, "answer_id": "x", "model_id": "m",
            "metadata": {}}


# ---------------------------------------------------------------------------------------------------------------
# RefCOCO
# ---------------------------------------------------------------------------------------------------------------

def test_box_parsing_and_padded_square_conversion():
    assert parse_box("It is at [0.25, 0.375, 0.75, 0.625] and [1, 2, 3, 4]") == (0.25, 0.375, 0.75, 0.625)
    assert parse_box("[12,  30.5,40 ,60]") == (12.0, 30.5, 40.0, 60.0)
    assert parse_box("(0.1, 0.2, 0.3, 0.4)") is None
    # 200 x 100 pads to 200 x 200 with the image 50 px down; 100 x 200 pads with it 50 px right
    assert to_pixels((0.25, 0.375, 0.75, 0.625), 200, 100) == (50.0, 25.0, 150.0, 75.0)
    assert to_pixels((0.3, 0.1, 0.5, 0.5), 100, 200) == pytest.approx((10.0, 20.0, 50.0, 100.0))
    assert to_pixels((50, 25, 150, 50), 200, 100) == (50, 25, 150, 50)  # pixels stay pixels
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((5, 5, 4, 8), (0, 0, 10, 10)) == 0.0


def test_refcoco_accuracy_at_iou_half_with_both_box_forms(tmp_path):
    wide = {"image": "wide.jpg", "width": 200, "height": 100, "bbox": [50, 25, 100, 50]}  # x1y1x2y2 50,25,150,75
    tall = {"image": "tall.jpg", "width": 100, "height": 200, "bbox": [10, 20, 40, 80]}  # 10,20,50,100
    questions = write_jsonl(tmp_path / "refcoco_val.jsonl", [
        {"question_id": 1, "expression": "the red car", **wide},
        {"question_id": 2, "text": "Where is the car?", **wide},
        {"question_id": 3, "expression": "left man", **tall},
        {"question_id": 4, "expression": "x", **wide},
        {"question_id": 5, "expression": "y", **wide},
        {"question_id": 6, "expression": "z", **wide}])
    loaded = get_benchmark("refcoco").load_questions(questions)
    assert loaded[0].prompt == ("Please provide the bounding box coordinate of the region this sentence "
                                "describes: the red car.")
    assert loaded[1].prompt == "Where is the car?"
    answers = [answer(1, "[0.25, 0.375, 0.75, 0.625]"),  # normalised on the padded square: exact, IoU 1
               answer(2, "The box is [50, 25, 150, 50]."),  # pixels: top half of the box, IoU 0.5 (counts)
               answer(3, "[0.3, 0.1, 0.5, 0.5]"),  # padded horizontally: exact, IoU 1
               answer(4, "a car"),  # no box
               answer(5, "[0.5, 0.5, 0.4, 0.6]")]  # x2 < x1: IoU 0; question 6 unanswered
    metrics = get_benchmark("refcoco").score(answers, questions, None)
    assert metrics == pytest.approx({"accuracy": 0.5, "mean_iou": 2.5 / 6, "questions": 6, "missing": 1,
                                     "unparsed": 1}, abs=1e-12)


def test_refcoco_rejects_rows_without_a_usable_box(tmp_path):
    questions = write_jsonl(tmp_path / "r.jsonl", [{"question_id": 1, "image": "a.jpg", "text": "t",
                                                    "bbox": [1, 2, 3], "width": 10, "height": 10}])
    with pytest.raises(BenchmarkDataError, match=r"r\.jsonl:1: .bbox' must be \[x, y, w, h\]"):
        get_benchmark("refcoco").load_questions(questions)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic split
# ---------------------------------------------------------------------------------------------------------------

def test_synthetic_exact_match_per_type_with_chance_numbers(tmp_path):
    rows = [(0, "colour", "red", "Red."), (1, "colour", "blue", " BLUE "), (2, "count", "two", "2"),
            (3, "count", "three", "three..."), (4, "region", "topleft", None)]
    questions = write_jsonl(tmp_path / "test.jsonl", [
        {"question_id": qid, "image": "images/test_00000.png", "text": "q" + SUFFIX, "answer": truth,
         "question_type": qtype} for qid, qtype, truth, _ in rows])
    answers = [answer(qid, text) for qid, _, _, text in rows if text is not None]
    without_metadata = get_benchmark("synthetic").score(answers, questions, None)
    # "2" is not "two": no number normalisation here; question 4 is unanswered
    assert without_metadata == pytest.approx({"accuracy": 0.6, "colour/accuracy": 1.0, "count/accuracy": 0.5,
                                              "region/accuracy": 0.0, "questions": 5, "missing": 1})
    (tmp_path / "metadata.json").write_text(json.dumps({"question_types": {
        "colour": {"uniform_chance": 0.166667, "majority_baseline": 0.5},
        "count": {"uniform_chance": 0.25, "majority_baseline": 0.5},
        "region": {"uniform_chance": 0.111111, "majority_baseline": 1.0},
        "shape": {"uniform_chance": 0.2, "majority_baseline": 0.0},  # no question of this type here
        "overall": {"uniform_chance": 0.2, "majority_baseline": 0.4}}}))
    with_metadata = get_benchmark("synthetic").score(answers, questions, None)
    assert with_metadata == pytest.approx({
        **without_metadata, "uniform_chance": 0.2, "majority_baseline": 0.4,
        "colour/uniform_chance": 0.166667, "colour/majority_baseline": 0.5, "count/uniform_chance": 0.25,
        "count/majority_baseline": 0.5, "region/uniform_chance": 0.111111, "region/majority_baseline": 1.0})
    with pytest.raises(BenchmarkDataError, match=r"elsewhere\.json: no such file"):
        get_benchmark("synthetic").score(answers, questions, tmp_path / "elsewhere.json")


def test_synthetic_scores_the_generated_data_set_format(tmp_path):
    dataset = generate_synthetic_dataset(tmp_path / "synthetic", SyntheticConfig(seed=3, train_images=2,
                                                                                 test_images=3))
    benchmark = get_benchmark("synthetic")
    questions = benchmark.load_questions(dataset.test_jsonl)
    assert len(questions) == dataset.test_questions
    assert all(q.prompt.endswith(SUFFIX) and q.image.startswith("images/test_") for q in questions)
    perfect = [answer(q.question_id, q.metadata["answer"].capitalize() + ".") for q in questions]
    metrics = benchmark.score(perfect, dataset.test_jsonl, None)
    metadata = json.loads(dataset.metadata_json.read_text())["question_types"]["overall"]
    assert metrics["accuracy"] == 1.0
    assert (metrics["uniform_chance"], metrics["majority_baseline"]) == (metadata["uniform_chance"],
                                                                        metadata["majority_baseline"])


# ---------------------------------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------------------------------

class ScriptedJudge:
    """Answers each request with the next reply for the first key found in the user message."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = {key: list(values) for key, values in replies.items()}
        self.calls: list[tuple[list[dict[str, str]], float, int]] = []

    def complete(self, messages, *, temperature, max_tokens):
        self.calls.append((messages, temperature, max_tokens))
        user = messages[-1]["content"]
        for key, values in self.replies.items():
            if key in user:
                return values.pop(0)
        raise AssertionError(f"unexpected request: {user[-200:]}")


@pytest.mark.parametrize(("review", "scores"), [
    ("8 9\nAssistant 2 is better.", (8.0, 9.0)),
    ("7.5 10", (7.5, 10.0)),
    ("8,9", (8.0, 9.0)),  # commas read as spaces
    ("8, 9", (-1.0, -1.0)),  # ... which then leaves two spaces: three parts
    ("Scores: 8 9", (-1.0, -1.0)),
    ("good bad", (-1.0, -1.0)),
])
def test_review_score_parse(review, scores):
    assert parse_review_scores(review) == scores


def test_mmvet_grade_parse():
    assert [parse_mmvet_grade(text) for text in ("0.5", "1.0 because", "1.0\n", "1.5", "great", "-0.1")] == [
        0.5, 1.0, 1.0, None, None, None]


@pytest.fixture
def llava_bench_files(tmp_path):
    questions = write_jsonl(tmp_path / "questions.jsonl", [
        {"question_id": 0, "image": "001.jpg", "text": "What is unusual?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe it.", "category": "detail"},
        {"question_id": 2, "image": "002.jpg", "text": "Why?", "category": "complex"}])
    folder = tmp_path / "llava-bench-in-the-wild"
    folder.mkdir()
    write_jsonl(folder / "context.jsonl", [{"id": "001", "image": "001.jpg", "caption": ["A man.", "A car."]},
                                           {"id": "002", "image": "002.jpg", "caption": "A dog."}])
    write_jsonl(folder / "answers_gpt4.jsonl", [{"question_id": qid, "text": f"reference {qid}"} for qid in range(3)])
    return questions, folder


def test_llava_bench_relative_score_with_a_scripted_judge(llava_bench_files):
    questions, folder = llava_bench_files
    judge = ScriptedJudge({"model 0": ["8 6\nok"], "model 1": ["10 5"], "model 2": ["I cannot rate this."]})
    answers = [answer(qid, f"model {qid}") for qid in range(3)]
    metrics = LlavaBenchBenchmark(judge=judge).score(answers, questions, folder)
    # pairs (8, 6), (10, 5), (-1, -1): means 17/3 and 10/3 -> 100 * 10 / 17; complex: -1 / -1 -> 100
    assert metrics == pytest.approx({
        "relative": 1000 / 17, "model_score": 10 / 3, "reference_score": 17 / 3,
        "conv/relative": 75.0, "conv/model_score": 6.0, "conv/reference_score": 8.0,
        "detail/relative": 50.0, "detail/model_score": 5.0, "detail/reference_score": 10.0,
        "complex/relative": 100.0, "complex/model_score": -1.0, "complex/reference_score": -1.0,
        "questions": 3, "parse_errors": 1}, abs=1e-9)
    messages, temperature, max_tokens = judge.calls[0]
    assert (temperature, max_tokens) == (0.2, 1024)
    assert messages[0] == {"role": "system",
                           "content": "You are a helpful and precise assistant for checking the quality of the answer."}
    content = messages[1]["content"]
    assert content.startswith("[Context]\nA man.\nA car.\n\n[Question]\nWhat is unusual?\n\n"
                              "[Assistant 1]\nreference 0\n\n[End of Assistant 1]\n\n"
                              "[Assistant 2]\nmodel 0\n\n[End of Assistant 2]\n\n[System]\nWe would like")
    assert content.endswith("does not affect your judgment.\n\n")
    assert judge.calls[2][0][1]["content"].startswith("[Context]\nA dog.\n\n")  # a caption string is used as is


def test_mmvet_grades_with_retries_and_capability_scores(tmp_path):
    questions = write_jsonl(tmp_path / "llava-mm-vet.jsonl", [
        {"question_id": qid, "image": f"v1_{qid}.png", "text": f"Q{qid}"} for qid in range(3)])
    data = tmp_path / "mm-vet.json"
    data.write_text(json.dumps({
        "v1_0": {"question": "What is x?", "answer": "-1<AND>-5", "capability": ["math", "ocr"]},
        "v1_1": {"question": "Read it.", "answer": "STOP", "capability": ["ocr"]},
        "v1_2": {"question": "What is it?", "answer": "dog", "capability": ["rec"]}}))
    judge = ScriptedJudge({"| x is -1 | ": ["0.5"], "| it says stop | ": ["great", "1.0 correct"]})
    answers = [answer(0, "x is -1"), answer(1, "it says stop")]  # 2 unanswered: 0.0, no request
    metrics = MMVetBenchmark(judge=judge).score(answers, questions, data)
    assert metrics == pytest.approx({"total": 50.0, "capability/math": 50.0, "capability/ocr": 75.0,
                                     "capability/rec": 0.0, "questions": 3, "missing": 1}, abs=1e-9)
    first, retried_1, retried_2 = (call[0][0]["content"] for call in judge.calls)
    assert first.endswith("\nWhat is x? | -1 <AND> -5 | x is -1 | ")
    assert first.startswith("Compare the ground truth and prediction from AI models")
    assert retried_2 == retried_1 + "\nPredict the correctness of the answer (digit): "
    assert [(call[1], call[2]) for call in judge.calls] == [(0.0, 3), (0.0, 3), (0.0, 3)]


def test_mmvet_gives_zero_after_five_unreadable_replies_with_rising_temperature(tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "a.png", "text": "Q"}])
    data = tmp_path / "mm-vet.json"
    data.write_text(json.dumps({"v1_0": {"question": "Q", "answer": "A", "capability": ["rec"]}}))
    judge = ScriptedJudge({"| A | ": ["no idea"] * 5})
    metrics = MMVetBenchmark(judge=judge).score([answer(0, "A")], questions, data)
    assert metrics["total"] == 0.0
    assert [call[1] for call in judge.calls] == [0.0, 0.0, 0.5, 1.0, 1.5]
    results = MMVetBenchmark().write_submission([answer(0, "A")], questions, tmp_path / "out")
    assert json.loads(results.read_text()) == {"v1_0": "A"}


def test_judged_benchmarks_are_off_without_a_judge_url(llava_bench_files, monkeypatch):
    monkeypatch.delenv("LLAVA_SP_JUDGE_URL", raising=False)
    questions, folder = llava_bench_files
    for name in ("llava_bench", "mmvet"):
        with pytest.raises(JudgeNotConfiguredError, match=f"{name} is scored by a GPT judge, which is off by "
                                                          "default; set LLAVA_SP_JUDGE_URL"):
            get_benchmark(name).score([], questions, folder)
    monkeypatch.setenv("LLAVA_SP_JUDGE_URL", "http://localhost:9/v1")
    monkeypatch.setenv("LLAVA_SP_JUDGE_MODEL", "local-judge")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert JudgeConfig.from_env() == JudgeConfig(url="http://localhost:9/v1", model="local-judge", api_key="k")


def test_http_judge_posts_chat_completions_and_retries_rate_limits():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(429, text="slow down")
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "8 9"}}]})

    config = JudgeConfig(url="http://judge.test/v1/", model="gpt-4-0613", api_key="secret", backoff_s=0.0)
    judge = OpenAICompatibleJudge(config, transport=httpx.MockTransport(handler))
    reply = judge.complete([{"role": "user", "content": "hi"}], temperature=0.2, max_tokens=1024)
    assert reply == "8 9"
    assert len(requests) == 2 and str(requests[1].url) == "http://judge.test/v1/chat/completions"
    assert requests[1].headers["authorization"] == "Bearer secret"
    assert json.loads(requests[1].content) == {"model": "gpt-4-0613", "messages": [{"role": "user", "content": "hi"}],
                                               "temperature": 0.2, "max_tokens": 1024}
    refusing = OpenAICompatibleJudge(config, transport=httpx.MockTransport(lambda r: httpx.Response(401, text="no")))
    with pytest.raises(JudgeError, match="refused the request .HTTP 401"):
        refusing.complete([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=3)

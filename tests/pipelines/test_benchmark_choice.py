"""pipelines/benchmarks: the closed-answer benchmarks (ScienceQA, POPE, MME, MMBench, SEED-Bench, MMVP), each on
hand-made files whose expected numbers are worked out in the comments from the official scripts' rules."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pytest

from pipelines.benchmarks import BenchmarkDataError, answer_record, get_benchmark
from pipelines.benchmarks.mmbench import MMBenchBenchmark, parse_option_letter
from pipelines.benchmarks.mme import parse_yes_no
from pipelines.benchmarks.mmvp import chosen_option, parse_options
from pipelines.benchmarks.pope import is_yes
from pipelines.benchmarks.scienceqa import parse_letter

SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "Answer with the option's letter from the given choices directly."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer(question_id, text: str, prompt: str = "", **extra) -> dict:
    return {"question_id": question_id, "prompt": prompt, "text": text, **extra, "answer_id": "x",
            "model_id": "m", "metadata": {}}


# ---------------------------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "letter"), [
    ("A", "A"),  # 1. the whole text is a letter
    ("E", "E"),
    ("B. Because plants need light.", "B"),  # 2. letter + ". "
    ("B.x", "FAILED"),  # no ". " and no "The answer is"
    ("A.", "FAILED"),  # shorter than 3 characters
    ("The answer is C.", "C"),  # 3. exactly one "The answer is X."
    ("So. The answer is D, clearly", "D"),  # the regex's '.' is any character
    ("The answer is F.", "F"),  # a letter beyond the options parses, then scores -1
    ("The answer is A. The answer is B.", "FAILED"),  # two matches
    ("I am not sure", "FAILED"),
])
def test_scienceqa_parse_order(text, letter):
    assert parse_letter(text) == letter


@pytest.fixture
def scienceqa_files(tmp_path):
    def problem(choices: int, answer_index: int, image: bool) -> dict:
        return {"choices": [f"c{i}" for i in range(choices)], "answer": answer_index,
                "image": "image.png" if image else None}

    problems = {"1": problem(3, 0, True), "2": problem(2, 1, True), "3": problem(4, 2, False),
                "4": problem(2, 0, False), "5": problem(2, 1, True), "6": problem(3, 0, True),
                "7": problem(2, 0, False), "8": problem(5, 4, False)}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2", "3", "4", "5", "6", "8"],
                                                          "val": ["7"]}))
    rows = [{"id": pid, "conversations": [{"from": "human", "value": f"<image>\nQuestion {pid}?\nOptions: (A) x"},
                                          {"from": "gpt", "value": "The answer is A."}],
             **({"image": f"{pid}/image.png"} if problems[pid]["image"] else {})} for pid in problems]
    questions = tmp_path / "llava_test_CQM-A.json"
    questions.write_text(json.dumps(rows))
    return questions, tmp_path


def test_scienceqa_prompts_put_image_token_only_in_the_recorded_prompt(scienceqa_files):
    questions, _ = scienceqa_files
    loaded = {q.question_id: q for q in get_benchmark("scienceqa").load_questions(questions)}
    prompt = f"Question 1?\nOptions: (A) x\n{LETTER_SUFFIX}"
    assert (loaded["1"].prompt, loaded["1"].recorded_prompt, loaded["1"].image) == (
        prompt, f"<image>\n{prompt}", "1/image.png")
    assert loaded["3"].recorded_prompt == loaded["3"].prompt and loaded["3"].image is None
    assert loaded["1"].max_new_tokens == 1024


def test_scienceqa_accuracy_and_img_accuracy_over_each_parse_branch(scienceqa_files):
    questions, annotations = scienceqa_files
    texts = {"1": "A",  # right (image)
             "2": "B. Because.",  # right (image)
             "3": "The answer is C.",  # right
             "4": "The answer is A. The answer is B.",  # FAILED
             "5": "C",  # letter beyond its 2 choices -> -1 (image)
             "8": "E",  # right
             "7": "A"}  # not in the test split; 6 is unanswered (FAILED, and outside IMG: its prompt is unknown)
    loaded = {q.question_id: q for q in get_benchmark("scienceqa").load_questions(questions)}
    answers = [answer_record(loaded[pid], text, "m") for pid, text in texts.items()]
    metrics = get_benchmark("scienceqa").score(answers, questions, annotations)
    # test split: 7 problems, 4 right; IMG: answered problems with <image> = 1, 2, 5 -> 2 of 3
    assert metrics == pytest.approx({"accuracy": 400 / 7, "img_accuracy": 200 / 3, "correct": 4, "questions": 7,
                                     "img_questions": 3, "failed": 2, "missing": 1}, abs=1e-9)


def test_scienceqa_needs_the_data_folder(scienceqa_files):
    with pytest.raises(BenchmarkDataError, match="problems.json and pid_splits.json"):
        get_benchmark("scienceqa").score([], scienceqa_files[0], None)


# ---------------------------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "yes"), [
    ("Yes there is a dog.", True),
    ("No, there is not.", False),  # "No" after the comma is removed
    ("There is not a cat. No.", False),  # "not" in the first sentence
    ("Yes. No dog here.", True),  # only the first sentence counts
    ("Yes, no.", False),
    ("no", False),
    ("NO", True),  # case-sensitive words: "NO" is not "No"/"no"
    ("Nope", True),
    ("", True),
])
def test_pope_reads_yes_unless_the_first_sentence_has_no_or_not(text, yes):
    assert is_yes(text) is yes


@pytest.fixture
def pope_files(tmp_path):
    categories = {1: "adversarial", 2: "adversarial", 3: "adversarial", 4: "adversarial", 5: "random", 6: "random"}
    questions = write_jsonl(tmp_path / "llava_pope_test.jsonl", [
        {"question_id": qid, "image": f"{qid}.jpg", "text": "Is there a dog?" + SUFFIX, "category": category}
        for qid, category in categories.items()])
    labels = tmp_path / "coco"
    labels.mkdir()
    write_jsonl(labels / "coco_pope_adversarial.json", [{"label": label} for label in ("yes", "no", "yes", "no")])
    write_jsonl(labels / "coco_pope_random.json", [{"label": label} for label in ("no", "yes")])
    return questions, labels


def test_pope_metrics_per_category_and_average(pope_files):
    questions, labels = pope_files
    answers = [answer(1, "Yes there is a dog."), answer(5, "No, there is not."), answer(2, "No, there is not."),
               answer(3, "NO"), answer(6, "There is not a cat. No."), answer(4, "Yes. No dog.")]
    metrics = get_benchmark("pope").score(answers, questions, labels)
    # adversarial preds [yes, no, yes, yes] vs [yes, no, yes, no]: TP 2, TN 1, FP 1 -> acc .75, P 2/3, R 1, F1 .8
    # random preds [no, no] vs [no, yes]: TN 1, FN 1 -> acc .5, P 0 (no yes predictions), R 0, F1 0
    assert metrics == pytest.approx({
        "adversarial/acc": 0.75, "adversarial/precision": 2 / 3, "adversarial/recall": 1.0, "adversarial/f1": 0.8,
        "adversarial/yes_ratio": 0.75,
        "random/acc": 0.5, "random/precision": 0.0, "random/recall": 0.0, "random/f1": 0.0, "random/yes_ratio": 0.0,
        "average/acc": 0.625, "average/precision": 1 / 3, "average/recall": 0.5, "average/f1": 0.4,
        "average/yes_ratio": 0.375}, abs=1e-12)


def test_pope_pairs_answers_with_labels_by_position_not_by_id(pope_files):
    questions, labels = pope_files
    in_order = [answer(5, "No."), answer(6, "Yes.")]  # random labels are [no, yes]
    reversed_order = [answer(6, "Yes."), answer(5, "No.")]  # same answers, other file order
    assert get_benchmark("pope").score(in_order, questions, labels)["random/acc"] == 1.0
    assert get_benchmark("pope").score(reversed_order, questions, labels)["random/acc"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "label"), [
    ("Yes", "yes"), ("no", "no"), ("Yes, there is a bus.", "yes"), ("Not sure", "no"), ("nope", "no"),
    ("yesterday", "yes"), ("I think yes", "other"), ("Maybe", "other"), ("Y", "other"),
])
def test_mme_prediction_parse(text, label):
    assert parse_yes_no(text) == label


@pytest.fixture
def mme_files(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    files = {
        "existence/000000006040.txt": "Is there a train? Please answer yes or no.\tYes\n"
                                      "Is there a bed? Please answer yes or no.\tNo\n",
        "existence/000000018150.txt": "Is there a bus? Please answer yes or no.\tYes\n"
                                      "Is there a cow? Please answer yes or no.\tNo\n",
        "count/questions_answers_YN/1.txt": "Are there two dogs? Please answer yes or no.\tYes\n"
                                            "Are there three dogs? Please answer yes or no.\tNo\n",
        # the two-space variant some MME files have
        "code_reasoning/0020.txt": "Is the output 5? Please answer yes or no.\tYes\n"
                                   "Is the output 6?  Please answer yes or no.\tNo\n",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    (root / "count" / "images").mkdir()
    rows = [("existence/000000006040.jpg", "Is there a train? Please answer yes or no."),
            ("existence/000000006040.jpg", "Is there a bed? Please answer yes or no."),
            ("existence/000000018150.jpg", "Is there a bus? Please answer yes or no."),
            ("existence/000000018150.jpg", "Is there a cow? Please answer yes or no."),
            ("count/1.jpg", "Are there two dogs? Please answer yes or no."),
            ("count/1.jpg", "Are there three dogs? Please answer yes or no."),
            ("code_reasoning/0020.png", "Is the output 5? Please answer yes or no."),
            ("code_reasoning/0020.png", "Is the output 6?")]  # the converter appends the yes/no sentence
    questions = write_jsonl(tmp_path / "llava_mme.jsonl", [
        {"question_id": qid, "image": qid, "text": text + SUFFIX, "category": qid.split("/")[0]}
        for qid, text in rows])
    return questions, root, rows


def test_mme_acc_acc_plus_score_and_totals(mme_files):
    questions, root, rows = mme_files
    texts = ["Yes", "No",  # existence image 1: both right
             "Yes, there is a bus.", "Maybe",  # existence image 2: right, "other" (wrong)
             "no", "No",  # count: wrong, right
             "yes", "no"]  # code_reasoning: both right
    answers = [answer(qid, text, prompt + SUFFIX) for (qid, prompt), text in zip(rows, texts)]
    metrics = get_benchmark("mme").score(answers, questions, root)
    assert metrics == pytest.approx({
        "existence/acc": 0.75, "existence/acc_plus": 0.5, "existence/score": 125.0, "existence/other": 1,
        "count/acc": 0.5, "count/acc_plus": 0.0, "count/score": 50.0, "count/other": 0,
        "code_reasoning/acc": 1.0, "code_reasoning/acc_plus": 1.0, "code_reasoning/score": 200.0,
        "code_reasoning/other": 0,
        "perception": 175.0, "cognition": 200.0}, abs=1e-12)


def test_mme_pairs_consecutive_answer_lines_and_rejects_odd_counts(mme_files):
    questions, root, rows = mme_files
    order = (0, 2, 1, 3)  # train, bus, bed, cow: the two images' questions interleaved
    all_no = [answer(rows[i][0], "No", rows[i][1]) for i in order]
    # right: bed, cow. Consecutive lines pair (train x, bus x) and (bed ok, cow ok): acc+ 1/2, where pairing by
    # image would give (train x, bed ok), (bus x, cow ok): 0
    metrics = get_benchmark("mme").score(all_no, questions, root)
    assert (metrics["existence/acc"], metrics["existence/acc_plus"], metrics["existence/score"]) == (0.5, 0.5, 100.0)
    with pytest.raises(BenchmarkDataError, match="mme existence: 3 answers"):
        get_benchmark("mme").score(all_no[:3], questions, root)


def test_mme_needs_each_answers_prompt(mme_files):
    """Both questions of an image share its question_id: an answer line without its prompt cannot be placed (the
    lookup by question_id scored LLaVA-1.5-13B's real answers 559.30 instead of 1531.32)."""
    questions, root, rows = mme_files
    answers = [answer(qid, "Yes", prompt + SUFFIX) for qid, prompt in rows]
    del answers[1]["prompt"]
    for score in (get_benchmark("mme").score, get_benchmark("mme").evaluate):
        with pytest.raises(BenchmarkDataError,
                           match=r"\(question_id existence/000000006040.jpg\): no 'prompt' string"):
            score(answers, questions, root)
    del answers[1]
    metrics = get_benchmark("mme").evaluate(answers[:1] + answers[2:3], questions, root)
    assert metrics["unanswered"] == 6  # matched by question_id and prompt: the bed question is not the train's


# ---------------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------------

MMBENCH_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def mmbench_tsv(tmp_path):
    rows = [
        ["0", "What colour?", "nan", "red", "blue", "green", "", "B", "attr", b64(b"zero"), "s", "l2", "c", "dev"],
        # MMBench's circular copy of question 0: options rotated, image stored as a reference to row 0
        ["1000000", "What colour?", "", "blue", "green", "red", "None", "A", "attr", "0", "s", "l2", "c", "dev"],
        ["1", "How many?", "Look closely.", "one", "two", "nan", "nan", "A", "count", b64(b"one"), "s", "l2", "c",
         "dev"],
        ["2", "Which?", "", "w", "x", "y", "four", "D", "misc", b64(b"two"), "s", "l2", "c", "dev"],
    ]
    path = tmp_path / "mmbench_dev.tsv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(MMBENCH_HEADER)
        writer.writerows(rows)
    return path


def test_mmbench_prompts_options_until_none_hint_and_rotations(mmbench_tsv):
    questions = MMBenchBenchmark(all_rounds=True).load_questions(mmbench_tsv)
    assert [(q.question_id, q.metadata["round_id"]) for q in questions] == [
        (0, 0), (0, 1), (0, 2), (1000000, 0), (1000000, 1), (1000000, 2), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2),
        (2, 3)]
    first = questions[0]
    assert first.recorded_prompt == "What colour?\nA. red\nB. blue\nC. green"  # hint "nan" is no hint
    assert first.prompt == first.recorded_prompt + "\n" + LETTER_SUFFIX
    assert (first.image, first.image_bytes, first.max_new_tokens) == (None, b"zero", 1024)
    assert questions[3].image_bytes == b"zero"  # resolved through the row reference
    rotated = questions[7]
    assert rotated.recorded_prompt == "Look closely.\nHow many?\nA. two\nB. one"
    assert (rotated.metadata["options"], rotated.metadata["option_char"]) == (["two", "one"], ["B", "A"])
    record = answer_record(rotated, "B", "m")
    assert (record["prompt"], record["round_id"], record["option_char"]) == (rotated.recorded_prompt, 1, ["B", "A"])
    assert len(get_benchmark("mmbench").load_questions(mmbench_tsv)) == 4  # the scripts ask round 0 only
    assert get_benchmark("mmbench_cn").load_questions(mmbench_tsv)[0].prompt.endswith("\n请直接回答选项字母。")


@pytest.mark.parametrize(("text", "letter"), [
    ("B", "B"), ("B.", "B"), ("B) blue", "B"), ("Blue", "B"), ("blue.", "B"), ("A dog", "A"), ("D", None),
    ("I don't know", None),
])
def test_mmbench_option_letter_parse(text, letter):
    assert parse_option_letter(text, ("red", "blue", "green")) == letter


def test_mmbench_single_round_and_circular_accuracy_with_one_wrong_rotation(mmbench_tsv):
    answers = [
        answer(0, "B", round_id=0),  # blue shown as B: right
        answer(0, "A.", round_id=1),  # [blue, green, red]: blue is A: right
        answer(0, "A", round_id=2),  # [green, red, blue]: A is green (original C): wrong
        answer(1000000, "A", round_id=0),  # right
        answer(1000000, "blue", round_id=1),  # [green, red, blue]: the text names blue (C -> original A): right
        answer(1000000, "B", round_id=2),  # [red, blue, green]: right
        answer(1, "A", round_id=0), answer(1, "B", round_id=1),  # both right
        answer(2, "A", round_id=0),  # wrong
    ]
    metrics = get_benchmark("mmbench").score(answers, mmbench_tsv, None)
    # round 0 of the 4 rows: 3 right. Groups {0, 1000000} (a wrong rotation), {1} right, {2} wrong: 1 of 3.
    assert metrics == pytest.approx({"accuracy": 75.0, "circular_accuracy": 100 / 3, "questions": 4,
                                     "circular_groups": 3, "missing": 0}, abs=1e-9)


def test_mmbench_submission_table_has_prediction_in_column_six(mmbench_tsv, tmp_path):
    answers = [answer(0, "B", round_id=0), answer(0, "C", round_id=1), answer(2, "D")]
    path = get_benchmark("mmbench").write_submission(answers, mmbench_tsv, tmp_path / "up")
    with path.open(newline="") as handle:
        table = list(csv.reader(handle, delimiter="\t"))
    assert table[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert [row[6] for row in table[1:]] == ["C", "", "", "D"]  # the last answer line of an index wins


def test_mmbench_test_split_without_answers_points_to_the_submission(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("index\tquestion\tA\tB\timage\n0\tq\tx\ty\t" + b64(b"img") + "\n")
    with pytest.raises(BenchmarkDataError, match="no 'answer' column.*write_submission"):
        get_benchmark("mmbench").score([answer(0, "A")], path, None)
    path.write_text("index\tquestion\tA\tB\n0\tq\tx\ty\n")
    with pytest.raises(BenchmarkDataError, match=r"test\.tsv:1: missing column 'image'"):
        get_benchmark("mmbench").load_questions(path)


# ---------------------------------------------------------------------------------------------------------------
# SEED-Bench
# ---------------------------------------------------------------------------------------------------------------

def test_seed_exact_string_equality_per_question_type(tmp_path):
    annotations = tmp_path / "SEED-Bench.json"
    annotations.write_text(json.dumps({
        "question_type": {"Scene Understanding": 1, "Instance Identity": 2},
        "questions": [
            {"question_id": "101", "question_type_id": 1, "answer": "A", "data_type": "image"},
            {"question_id": "102", "question_type_id": 1, "answer": "B", "data_type": "image"},
            {"question_id": "103", "question_type_id": 2, "answer": "C", "data_type": "image"},
            {"question_id": "104", "question_type_id": 2, "answer": "D", "data_type": "video"},
            {"question_id": "105", "question_type_id": 2, "answer": "A", "data_type": "image"},
        ]}))
    questions = write_jsonl(tmp_path / "llava-seed-bench.jsonl", [
        {"question_id": qid, "image": f"{qid}.jpg", "text": "Q\nA. a\nB. b\n" + LETTER_SUFFIX}
        for qid in (101, 102, 103, 104, 105)])
    answers = [answer(101, "A"), answer(102, "B."), answer(103, "c"), answer(104, "D")]  # 105 unanswered
    metrics = get_benchmark("seed").score(answers, questions, annotations)
    # right: 101 (type 1, image), 104 (type 2, video); "B." and "c" are not equal to their letters
    assert metrics == pytest.approx({"accuracy": 40.0, "image_accuracy": 25.0, "video_accuracy": 100.0,
                                     "type/scene_understanding": 50.0, "type/instance_identity": 100 / 3,
                                     "questions": 5, "missing": 1}, abs=1e-9)
    with pytest.raises(BenchmarkDataError, match=r"1 question\(s\) have no answer \(question_id 105\)"):
        get_benchmark("seed").write_submission(answers, questions, tmp_path / "up", annotations)
    path = get_benchmark("seed").write_submission(answers + [answer(105, "A")], questions, tmp_path / "up",
                                                  annotations)
    # The converter writes SEED-Bench.json's own ids (strings), in its order.
    assert [json.loads(line) for line in path.read_text().splitlines()][:2] == [
        {"question_id": "101", "prediction": "A"}, {"question_id": "102", "prediction": "B."}]


def test_seed_looks_answers_up_by_the_int_of_the_annotation_id(tmp_path):
    """convert_seed_for_submission.py: int("007") is 7; an answer line written with the string "007" is not found
    by the score (int key) but is by the upload (the id itself first)."""
    annotations = tmp_path / "SEED-Bench.json"
    annotations.write_text(json.dumps({"question_type": {"Scene Understanding": 1}, "questions": [
        {"question_id": "007", "question_type_id": 1, "answer": "A", "data_type": "image"},
        {"question_id": "008", "question_type_id": 1, "answer": "B", "data_type": "image"}]}))
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 7, "image": "7.jpg", "text": "Q"},
                                                   {"question_id": 8, "image": "8.jpg", "text": "Q"}])
    answers = [answer(7, "A"), answer("008", "B")]
    metrics = get_benchmark("seed").score(answers, questions, annotations)
    assert (metrics["accuracy"], metrics["missing"]) == (50.0, 1)
    path = get_benchmark("seed").write_submission(answers, questions, tmp_path / "up", annotations)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"question_id": "007", "prediction": "A"}, {"question_id": "008", "prediction": "B"}]


# ---------------------------------------------------------------------------------------------------------------
# MMVP
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def mmvp_csv(tmp_path):
    path = tmp_path / "Questions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Index", "Question", "Options", "Correct Answer"])
        writer.writerow([1, "Is the dog facing left or right?", "(a) Left (b) Right", "(a)"])
        writer.writerow([2, "Is the dog facing left or right?", "(a) Left (b) Right", "(b)"])
        writer.writerow([3, "Is the door open?", "(a) Yes (b) No", "(a)"])
        writer.writerow([4, "Is the door open?", "(a) Yes (b) No", "(b)"])
    return path


def test_mmvp_option_parsing():
    options = parse_options("(a) Left (b) Right")
    assert options == {"a": "Left", "b": "Right"}
    assert [chosen_option(text, options) for text in
            ("(a) Left", "b.", "(B)", "Right.", "The dog faces right.", "A dog", "left or right", "up")] == [
        "a", "b", "b", "b", "b", None, None, None]


def test_mmvp_questions_and_pair_accuracy(mmvp_csv):
    questions = get_benchmark("mmvp").load_questions(mmvp_csv)
    assert (questions[2].question_id, questions[2].prompt, questions[2].image, questions[2].max_new_tokens) == (
        3, "Is the door open? (a) Yes (b) No", "MMVP Images/3.jpg", 1024)
    answers = [answer(1, "(a) Left"), answer(2, "The dog is facing right."),  # pair 1: both right
               answer(3, "a"), answer(4, "Yes and no")]  # pair 2: names both options -> wrong
    metrics = get_benchmark("mmvp").score(answers, mmvp_csv, None)
    assert metrics == pytest.approx({"accuracy": 0.5, "question_accuracy": 0.75, "pairs": 2, "questions": 4,
                                     "missing": 0, "unparsed": 1}, abs=1e-12)

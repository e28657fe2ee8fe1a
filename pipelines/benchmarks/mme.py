r"""MME: LLaVA's convert_answer_to_mme.py followed by MME's eval_tool/calculation.py (both outside the LLaVA-SP repo).

Questions: LLaVA's `llava_mme.jsonl` ({question_id: "<category>/<image file>", image, text, category}); the two
questions of an image share its question_id, so an answer line is matched by question_id and prompt, and one
without a prompt is refused (the converter needs it too).
Annotations (`--annotations`): `MME_Benchmark_release_version/`, one folder per sub-task holding "question\tanswer"
.txt files (directly, or under questions_answers_YN/), one .txt per image.

The converter groups answer lines by category (qid before the first '/') in answer-file order, takes the answer's
prompt, removes "Answer the question using a single word or phrase.", strips it, makes sure it ends with
" Please answer yes or no." (falling back to the two-space variant some files have), and looks up the ground truth
by (category, <image stem>.txt, prompt). The calculator then takes **consecutive lines as one image's pair**.
A prediction (lower-cased) is yes/no if it is exactly that word, else its first four characters are checked for
"yes", then "no", else it is "other" (always wrong). acc = questions right / questions, acc+ = images with both
right / images, score = 100 * (acc + acc+) (max 200). perception sums the ten perception sub-tasks, cognition the
four cognition ones (those present: upstream needs all fourteen files).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import Benchmark, BenchmarkDataError, EvalQuestion
from pipelines.benchmarks.records import (
    check_answers,
    loader_questions,
    metric_key,
    ratio,
)

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SHORT_ANSWER = "Answer the question using a single word or phrase."
YES_NO = " Please answer yes or no."
QA_FOLDER = "questions_answers_YN"


def parse_yes_no(text: str) -> str:
    """calculation.py's parse_pred_ans on the lower-cased prediction: "yes", "no" or "other"."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_prompt(prompt: str, category: str, file: str, truth: dict[tuple[str, str, str], str]) -> str:
    """The converter's rewrite of an answer's prompt into the MME ground-truth question."""
    if SHORT_ANSWER in prompt:
        prompt = prompt.replace(SHORT_ANSWER, "").strip()
    if YES_NO.strip() not in prompt:
        prompt = prompt + YES_NO
        if (category, file, prompt) not in truth:
            prompt = prompt.replace(YES_NO, " " + YES_NO)
    return prompt


def subtask_metrics(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """acc, acc_plus (fractions), score and other count of one sub-task from its (truth, prediction) lines in order."""
    right = [parse_yes_no(prediction) == truth.lower() for truth, prediction in pairs]
    images = [right[start:start + 2] for start in range(0, len(right), 2)]
    acc = ratio(sum(right), len(right))
    acc_plus = ratio(sum(all(image) for image in images), len(images))
    return {"acc": acc, "acc_plus": acc_plus, "score": 100.0 * (acc + acc_plus),
            "other": sum(parse_yes_no(prediction) == "other" for _, prediction in pairs)}


class MMEBenchmark(Benchmark):
    name = "mme"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path)

    def question_key(self, question: EvalQuestion) -> str:
        return f"{question.question_id}\t{question.prompt}"  # the two questions of an image share its question_id

    def answer_question_key(self, answer: dict[str, Any]) -> str:
        return f"{answer['question_id']}\t{answer_prompt(answer)}"

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        truth = mme_ground_truth(annotations)
        check_answers(answers)
        lines: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for index, answer in enumerate(answers, start=1):
            question_id = str(answer["question_id"])
            category, file = question_id.split("/")[0], question_id.split("/")[-1].split(".")[0] + ".txt"
            question = mme_prompt(answer_prompt(answer, index), category, file, truth)
            if (category, file, question) not in truth:
                raise BenchmarkDataError(f"answer {index} (question_id {question_id}): no ground truth in "
                                         f"{annotations} for {category}/{file} question {question!r}")
            lines[category].append((truth[category, file, question], answer["text"]))
        metrics: dict[str, float] = {}
        for category, pairs in lines.items():
            if len(pairs) % 2:
                raise BenchmarkDataError(f"mme {category}: {len(pairs)} answers; MME scores each image's two "
                                         "questions as consecutive answer lines, so the count must be even")
            for name, value in subtask_metrics(pairs).items():
                metrics[f"{metric_key(category)}/{name}"] = value
        metrics["perception"] = sum(metrics.get(f"{metric_key(t)}/score", 0.0) for t in PERCEPTION)
        metrics["cognition"] = sum(metrics.get(f"{metric_key(t)}/score", 0.0) for t in COGNITION)
        return metrics


def answer_prompt(answer: dict[str, Any], index: int | None = None) -> str:
    """The answer line's prompt, which tells the two questions of an image apart (the converter reads it too)."""
    if not isinstance(answer.get("prompt"), str):
        where = f"answer {index}" if index is not None else "an answer"
        raise BenchmarkDataError(f"{where} (question_id {answer.get('question_id')}): no 'prompt' string; MME "
                                 "tells the two questions of an image apart by the prompt the loader recorded")
    return answer["prompt"]


def mme_ground_truth(annotations: Path | None) -> dict[tuple[str, str, str], str]:
    """(category, file.txt, question) -> "Yes"/"No", from every sub-task folder (convert_answer_to_mme.get_gt)."""
    if annotations is None or not Path(annotations).is_dir():
        raise BenchmarkDataError("mme needs --annotations: the MME_Benchmark_release_version folder "
                                 f"(one folder of question<TAB>answer .txt files per sub-task; got {annotations})")
    truth = {}
    for category_dir in sorted(path for path in Path(annotations).iterdir() if path.is_dir()):
        qa_dir = category_dir / QA_FOLDER if (category_dir / QA_FOLDER).is_dir() else category_dir
        for text_file in sorted(qa_dir.glob("*.txt")):
            for number, line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.strip().split("\t")
                if len(parts) != 2:
                    raise BenchmarkDataError(f"{text_file}:{number}: expected 'question<TAB>answer', "
                                             f"got {len(parts)} field(s)")
                if parts[1].lower() not in ("yes", "no"):
                    raise BenchmarkDataError(f"{text_file}:{number}: MME answers are yes or no, got {parts[1]!r}")
                truth[category_dir.name, text_file.name, parts[0]] = parts[1]
    if not truth:
        raise BenchmarkDataError(f"{annotations}: no sub-task folders with question<TAB>answer .txt files")
    return truth

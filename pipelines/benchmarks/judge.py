"""LLaVA-Bench (in-the-wild) and MM-Vet: open-ended answers graded by a GPT judge (judge_client.py, off by default).

Both ask with model_vqa.py (1024 new tokens, greedy) from a {question_id, image, text, category?} jsonl.

LLaVA-Bench (eval_gpt_review_bench.py + summarize_gpt_review.py). Annotations (`--annotations`): the
llava-bench-in-the-wild folder with `context.jsonl` ({image, caption}) and `answers_gpt4.jsonl` (the reference
answers). For each question the judge (system "You are a helpful and precise assistant for checking the quality of
the answer.", temperature 0.2, 1024 tokens) reviews [Context] caption, [Question], [Assistant 1] = reference,
[Assistant 2] = model, under the rule of the question's category (`llava_bench_<category>`). The review's first
line, commas read as spaces, split on single spaces, must be exactly two numbers (reference, model); otherwise the
pair is (-1, -1), and it is averaged in like any other, as upstream does (`parse_errors` counts them). The score
is 100 * mean(model) / mean(reference), overall (`relative`) and per category (`<category>/relative`). Upstream
pairs the three files by line position; here questions, references and answers are matched by question_id.

MM-Vet (github.com/yuweihao/MM-Vet mm-vet_evaluator.py; LLaVA's convert_mmvet_for_eval.py keys answers as
"v1_<question_id>"). Annotations: `mm-vet.json` ({"v1_<n>": {question, answer, capability: [...]}}). The judge
completes a few-shot table (temperature 0, 3 tokens); the grade is the first space-separated token as a number in
[0, 1]. Otherwise it asks again with "\\nPredict the correctness of the answer (digit): " appended, at temperature
0, then 0.5, 1.0, 1.5, and grades 0.0 after the fifth unreadable reply (upstream then makes a sixth request whose
reply it never reads; we skip it). Metrics are percent: `total` and one per capability (`capability/<cap>`), each
the sum of grades over the questions having it / their count.
An unanswered question is graded 0.0 without asking. `write_submission` writes the {"v1_<id>": text} results file
that the official evaluator reads.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    EvalQuestion,
)
from pipelines.benchmarks.judge_client import Judge, configured_judge
from pipelines.benchmarks.records import (
    annotation_file,
    answers_by_id,
    check_answers,
    id_key,
    loader_questions,
    metric_key,
    ratio,
    read_json,
    read_jsonl_lines,
    require_fields,
    warn_missing,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# LLaVA-Bench
# ---------------------------------------------------------------------------------------------------------------

REVIEW_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
REVIEW_ROLE = "Assistant"
# llava/eval/table/rule.json: the three llava_bench_* rules share one text.
REVIEW_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user question "
    "displayed above. The user asks the question on observing an image. For your reference, the visual content in "
    "the image is represented with a few sentences describing the image. \nPlease rate the helpfulness, relevance, "
    "accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, "
    "where a higher score indicates better overall performance.\nPlease first output a single line containing only "
    "two values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space."
    "\nIn the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your judgment.")
REVIEW_RULES = {f"llava_bench_{category}": REVIEW_RULE for category in ("conv", "detail", "complex")}
REVIEW_TEMPERATURE, REVIEW_MAX_TOKENS = 0.2, 1024
PARSE_ERROR = (-1.0, -1.0)


def review_prompt(caption: str, question: str, reference: str, answer: str, rule: str) -> str:
    role = REVIEW_ROLE
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n[System]\n{rule}\n\n")


def parse_review_scores(review: str) -> tuple[float, float]:
    """(reference score, model score) from the review's first line, or (-1, -1) as upstream's parse_score."""
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return PARSE_ERROR
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return PARSE_ERROR


def relative_scores(tuples: list[tuple[float, float]]) -> dict[str, float]:
    reference = ratio(sum(pair[0] for pair in tuples), len(tuples))
    model = ratio(sum(pair[1] for pair in tuples), len(tuples))
    return {"relative": 100.0 * ratio(model, reference), "model_score": model, "reference_score": reference}


class LlavaBenchBenchmark(Benchmark):
    name = "llava_bench"

    def __init__(self, judge: Judge | None = None) -> None:
        self.judge = judge

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path, max_new_tokens=LONG_MAX_NEW_TOKENS)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        judge = configured_judge(self.judge, self.name)
        captions, references = _llava_bench_annotations(annotations)
        predictions = answers_by_id(answers)
        by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for question in self.load_questions(questions_path):
            key, where = id_key(question.question_id), f"{questions_path}: question_id {question.question_id}"
            category = f"llava_bench_{question.metadata.get('category')}"
            if category not in REVIEW_RULES:
                raise BenchmarkDataError(f"{where}: category {question.metadata.get('category')!r} has no review "
                                         f"rule (known: conv, detail, complex)")
            if question.image not in captions:
                raise BenchmarkDataError(f"{where}: image {question.image!r} is not in context.jsonl")
            if key not in references:
                raise BenchmarkDataError(f"{where}: no reference answer in answers_gpt4.jsonl")
            if key not in predictions:
                raise BenchmarkDataError(f"{where}: no answer; LLaVA-Bench reviews every question")
            content = review_prompt(captions[question.image], question.prompt, references[key],
                                    predictions[key]["text"], REVIEW_RULES[category])
            review = judge.complete([{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": content}],
                                    temperature=REVIEW_TEMPERATURE, max_tokens=REVIEW_MAX_TOKENS)
            by_category[category.removeprefix("llava_bench_")].append(parse_review_scores(review))
        everything = [pair for pairs in by_category.values() for pair in pairs]
        metrics = relative_scores(everything)
        for category, pairs in sorted(by_category.items()):
            metrics.update({f"{category}/{name}": value for name, value in relative_scores(pairs).items()})
        metrics.update(questions=len(everything), parse_errors=sum(pair == PARSE_ERROR for pair in everything))
        return metrics


def _llava_bench_annotations(annotations: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """image -> caption (a list of sentences is joined by newlines), question_id -> reference answer text."""
    if annotations is None or not Path(annotations).is_dir():
        raise BenchmarkDataError("llava_bench needs --annotations: the llava-bench-in-the-wild folder holding "
                                 f"context.jsonl and answers_gpt4.jsonl (got {annotations})")
    folder = Path(annotations)
    captions = {}
    for where, row in read_jsonl_lines(folder / "context.jsonl"):
        require_fields(row, ("image", "caption"), where)
        caption = row["caption"]
        captions[str(row["image"])] = "\n".join(caption) if isinstance(caption, list) else str(caption)
    references = {}
    for where, row in read_jsonl_lines(folder / "answers_gpt4.jsonl"):
        require_fields(row, ("question_id", "text"), where)
        references[id_key(row["question_id"])] = str(row["text"])
    return captions, references


# ---------------------------------------------------------------------------------------------------------------
# MM-Vet
# ---------------------------------------------------------------------------------------------------------------

# The official evaluator's few-shot table, verbatim (its long lines included).
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
MMVET_MAX_TOKENS, MMVET_TEMPERATURE_STEP, MMVET_MAX_TRIES = 3, 0.5, 5
MMVET_KEY_PREFIX = "v1_"
MMVET_SUBMISSION_NAME = "mmvet_results.json"


def mmvet_query(question: str, ground_truth: str, prediction: str) -> str:
    spaced_truth = ground_truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{MMVET_PROMPT}\n{question} | {spaced_truth} | {prediction} | "


def parse_mmvet_grade(content: str) -> float | None:
    """The grade in [0, 1] that starts the judge's reply, or None when it is not one."""
    try:
        grade = float(content.split(" ")[0].strip())
    except ValueError:
        return None
    return grade if 0.0 <= grade <= 1.0 else None


def grade_mmvet(judge: Judge, question: str, ground_truth: str, prediction: str) -> float:
    """One MM-Vet grade with the evaluator's retry schedule."""
    query, temperature = mmvet_query(question, ground_truth, prediction), 0.0
    for attempt in range(1, MMVET_MAX_TRIES + 1):
        content = judge.complete([{"role": "user", "content": query}], temperature=temperature,
                                 max_tokens=MMVET_MAX_TOKENS)
        grade = parse_mmvet_grade(content)
        if grade is not None:
            return grade
        if attempt == 1:
            query += MMVET_RETRY_SUFFIX
        else:
            temperature += MMVET_TEMPERATURE_STEP
    logger.warning("mmvet: no grade in %d replies (last %r); grading 0.0", MMVET_MAX_TRIES, content)
    return 0.0


class MMVetBenchmark(Benchmark):
    name = "mmvet"

    def __init__(self, judge: Judge | None = None) -> None:
        self.judge = judge

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        return loader_questions(questions_path, max_new_tokens=LONG_MAX_NEW_TOKENS)

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        judge = configured_judge(self.judge, self.name)
        path = annotation_file(annotations, self.name, "mm-vet.json", "mm-vet.json (or the folder holding it)")
        data = read_json(path)
        if not isinstance(data, dict):
            raise BenchmarkDataError(f"{path}: expected {{\"v1_<n>\": {{question, answer, capability}}}}")
        predictions = answers_by_id(answers)
        grades: dict[str, list[float]] = defaultdict(list)
        missing = 0
        for question in self.load_questions(questions_path):
            key = f"{MMVET_KEY_PREFIX}{question.question_id}"
            entry = data.get(key)
            if entry is None:
                raise BenchmarkDataError(f"{path}: no entry {key!r} for question_id {question.question_id} of "
                                         f"{questions_path}")
            require_fields(entry, ("question", "answer", "capability"), f"{path}: {key}")
            answer = predictions.get(id_key(question.question_id))
            missing += answer is None
            grade = 0.0 if answer is None else grade_mmvet(judge, str(entry["question"]), str(entry["answer"]),
                                                           answer["text"])
            grades["total"].append(grade)
            for capability in set(entry["capability"]):
                grades[f"capability/{metric_key(capability)}"].append(grade)
        warn_missing(self.name, missing, len(grades["total"]))
        metrics = {name: 100.0 * ratio(sum(values), len(values)) for name, values in sorted(grades.items())}
        metrics.update(questions=len(grades["total"]), missing=missing)
        return metrics

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        check_answers(answers)
        results = {f"{MMVET_KEY_PREFIX}{answer['question_id']}": answer["text"] for answer in answers}
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / MMVET_SUBMISSION_NAME
        destination.write_text(json.dumps(results, indent=2))
        return destination

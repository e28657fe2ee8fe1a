r"""ScienceQA (test, IMG subset too): model_vqa_science.py + eval_science_qa.py.

Questions: LLaVA's `llava_test_CQM-A.json` (a JSON list of {id, image?, conversations}); the prompt is the first
human turn without "<image>", stripped, plus "\nAnswer with the option's letter from the given choices directly."
(the scripts pass --single-pred-prompt). The answer line's prompt gets "<image>\n" in front for questions with an
image, which is how the scorer recognises the IMG subset. 1024 new tokens, greedy.

Annotations (`--annotations`): the ScienceQA data folder holding `problems.json` ({pid: {choices, answer}}) and
`pid_splits.json` ({"test": [pid, ...]}). Every problem of the test split is scored; a missing answer is FAILED.
The letter is parsed in the official order (`parse_letter`); the prediction is right iff the letter's index is
below len(choices) and equals the problem's answer index. IMG-accuracy is over the problems whose *answer line's*
prompt contains "<image>", so (as upstream) a missing answer does not count in the IMG subset at all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    EvalQuestion,
)
from pipelines.benchmarks.records import (
    answers_by_id,
    numbered,
    ratio,
    read_json,
    require_fields,
    warn_missing,
)

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
# The '.' is unescaped upstream, so "The answer is B," matches too.
ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
IMAGE_TOKEN = "<image>"
SPLIT = "test"


def parse_letter(text: str) -> str:
    """The option letter eval_science_qa.py reads from a prediction, or "FAILED"."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else FAILED


def predicted_index(letter: str, choices: int) -> int:
    """The choice index of a letter, -1 when it is FAILED or beyond this problem's choices."""
    return OPTIONS.index(letter) if letter in OPTIONS[:choices] else -1


class ScienceQABenchmark(Benchmark):
    name = "scienceqa"

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        rows = read_json(questions_path)
        if not isinstance(rows, list):
            raise BenchmarkDataError(f"{questions_path}: expected a JSON list of {{id, conversations}} "
                                     "(LLaVA's llava_test_CQM-A.json)")
        questions = []
        for where, row in numbered(rows, questions_path):
            require_fields(row, ("id", "conversations"), where)
            turns = row["conversations"]
            if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict) or "value" not in turns[0]:
                raise BenchmarkDataError(f"{where}: 'conversations' must start with a {{from, value}} turn")
            text = str(turns[0]["value"]).replace(IMAGE_TOKEN, "").strip()
            prompt = f"{text}\n{SINGLE_PRED_PROMPT}"
            image = row.get("image")
            questions.append(EvalQuestion(
                question_id=row["id"], prompt=prompt, image=image, max_new_tokens=LONG_MAX_NEW_TOKENS,
                recorded_prompt=f"{IMAGE_TOKEN}\n{prompt}" if image else prompt))
        return questions

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        problems, split = _problems_and_split(annotations)
        predictions = answers_by_id(answers)
        correct = total = image_correct = image_total = failed = missing = 0
        for pid in split:
            if pid not in problems:
                raise BenchmarkDataError(f"problems.json has no problem {pid!r} listed in pid_splits.json[{SPLIT!r}]")
            problem = problems[pid]
            require_fields(problem, ("choices", "answer"), f"problems.json: problem {pid}")
            answer = predictions.get(str(pid))
            missing += answer is None
            text, prompt = (FAILED, "Unknown") if answer is None else (answer["text"], str(answer.get("prompt", "")))
            letter = parse_letter(text)
            failed += letter == FAILED
            right = predicted_index(letter, len(problem["choices"])) == problem["answer"]
            correct += right
            total += 1
            if IMAGE_TOKEN in prompt:
                image_correct += right
                image_total += 1
        warn_missing(self.name, missing, total)
        return {"accuracy": 100.0 * ratio(correct, total), "img_accuracy": 100.0 * ratio(image_correct, image_total),
                "correct": correct, "questions": total, "img_questions": image_total, "failed": failed,
                "missing": missing}


def _problems_and_split(annotations: Path | None) -> tuple[dict[str, Any], list[str]]:
    if annotations is None or not Path(annotations).is_dir():
        raise BenchmarkDataError("scienceqa needs --annotations: the ScienceQA data folder holding problems.json "
                                 f"and pid_splits.json (got {annotations})")
    folder = Path(annotations)
    problems = read_json(folder / "problems.json")
    splits = read_json(folder / "pid_splits.json")
    if not isinstance(problems, dict):
        raise BenchmarkDataError(f"{folder / 'problems.json'}: expected {{pid: problem}}")
    if not isinstance(splits, dict) or not isinstance(splits.get(SPLIT), list):
        raise BenchmarkDataError(f"{folder / 'pid_splits.json'}: expected {{{SPLIT!r}: [pid, ...]}}")
    return problems, [str(pid) for pid in splits[SPLIT]]

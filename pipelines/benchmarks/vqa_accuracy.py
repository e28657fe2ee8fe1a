"""EvalAI answer normalisation and the soft VQA accuracy shared by VQAv2, TextVQA and VizWiz.

The normaliser reproduces `EvalAIAnswerProcessor` (LLaVA's m4c_evaluator.py, itself copied from MMF) step by step,
including its quirks, because the VQAv2 / VizWiz servers and the TextVQA number all see answers through it:
the punctuation rule looks at the text as it was *before* any punctuation was touched; the period rule is a
regex that passes `re.UNICODE` (32) as its `count`, so at most 32 periods are removed; number words only go up to
ten; the contraction table has upper-case keys that can never match (the text is lower-cased first).

Soft accuracy: with 10 human answers, an answer a scores the mean over the 10 leave-one-out subsets of
min(1, #(a among the other 9) / 3). Three official scripts compute it, and differ in what they normalise:

- `vqa_accuracy`, TextVQA's `TextVQAAccuracyEvaluator` (m4c_evaluator.py): the prediction and every human answer
  through the full EvalAI processor above.
- `vqa_api_accuracy`, the VQA API's vqaEval.py (GT-Vision-Lab/VQA, the official local VQAv2 scorer): the result's
  answer gets the punctuation and digit/article steps (not the lower-casing and "'s" split the EvalAI processor
  does first); the human answers are left exactly as annotated when all ten agree, and get only the punctuation
  step when they differ. The leave-one-out compares whole answer dicts, as the script does.
- `vizwiz_api_accuracy`, the VizWiz API's evaluation (vizwiz.org): the result's answer as in the VQA API, the human
  answers never normalised, leave-one-out by position.

LLaVA's converters upload the EvalAI-normalised text, so the VQA and VizWiz API scores are computed on that text,
as they would be on the uploaded file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.benchmarks.base import BenchmarkDataError
from pipelines.benchmarks.records import metric_key, ratio

HUMAN_ANSWERS = 10  # the evaluator asserts exactly ten per question

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
# Removed when written next to a space (or when the text has digit,digit), else replaced by a space.
PUNCTUATIONS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
# The upstream pattern, typo included: "(?!<=\d)" is a negative lookahead for the text "<=digit", not the
# intended lookbehind, so a period is removed unless a digit follows it.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
# Upstream calls PERIOD_STRIP.sub("", text, re.UNICODE): the flag lands in the `count` slot.
UPSTREAM_PERIOD_COUNT = int(re.UNICODE)

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def normalize_answer(text: str) -> str:
    """EvalAIAnswerProcessor.__call__: tokenise, whitespace, punctuation, then digits/articles/contractions."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_and_articles(_punctuation(text))


def _punctuation(original: str) -> str:
    text = original
    has_digit_comma_digit = COMMA_STRIP.search(original) is not None
    for mark in PUNCTUATIONS:
        # The test reads the text before any mark was processed, not the text being rewritten.
        if mark + " " in original or " " + mark in original or has_digit_comma_digit:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    return PERIOD_STRIP.sub("", text, count=UPSTREAM_PERIOD_COUNT)


def _digits_and_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def human_answer_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Normalised answer -> its soft score against the 10 (normalised) human answers.

    Raises ValueError unless there are exactly 10; callers add where the answers came from."""
    normalized = [normalize_answer(answer) for answer in human_answers]
    if len(normalized) != HUMAN_ANSWERS:
        raise ValueError(f"expected {HUMAN_ANSWERS} human answers, got {len(normalized)}")
    scores = {}
    for candidate in set(normalized):
        subset_scores = []
        for left_out in range(len(normalized)):
            matches = sum(1 for index, answer in enumerate(normalized) if index != left_out and answer == candidate)
            subset_scores.append(min(1.0, matches / 3))
        scores[candidate] = sum(subset_scores) / len(subset_scores)
    return scores


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Soft accuracy in [0, 1] of one raw prediction; an answer no human gave scores 0."""
    return human_answer_scores(human_answers).get(normalize_answer(prediction), 0.0)


def _api_result_answer(text: str) -> str:
    """vqaEval.py's processing of a result's answer: whitespace, then punctuation, then digits/articles."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_and_articles(_punctuation(text))


def _leave_one_out_score(matches_left_out: Sequence[int]) -> float:
    return sum(min(1.0, matches / 3) for matches in matches_left_out) / len(matches_left_out)


def vqa_api_accuracy(submitted: str, human_answers: Sequence[dict[str, Any]]) -> float:
    """The VQA API's (vqaEval.py) score in [0, 1] of one submitted answer against the annotation's answer dicts
    ({"answer", "answer_confidence", "answer_id"}); raises ValueError unless there are exactly ten."""
    if len(human_answers) != HUMAN_ANSWERS:
        raise ValueError(f"expected {HUMAN_ANSWERS} human answers, got {len(human_answers)}")
    result = _api_result_answer(submitted)
    answers = [dict(answer) for answer in human_answers]
    if len({answer["answer"] for answer in answers}) > 1:
        for answer in answers:
            answer["answer"] = _punctuation(answer["answer"])
    # "other answers" are those unequal to the left-out dict: with answer_id in every dict, all but that one.
    return _leave_one_out_score([sum(1 for other in answers if other != left_out and other["answer"] == result)
                                 for left_out in answers])


def vizwiz_api_accuracy(submitted: str, human_answers: Sequence[str]) -> float:
    """The VizWiz API's score in [0, 1] of one submitted answer: human answers as annotated, leave-one-out by
    position; raises ValueError unless there are exactly ten."""
    if len(human_answers) != HUMAN_ANSWERS:
        raise ValueError(f"expected {HUMAN_ANSWERS} human answers, got {len(human_answers)}")
    result = _api_result_answer(submitted)
    return _leave_one_out_score([sum(1 for index, other in enumerate(human_answers)
                                     if index != left_out and other == result)
                                 for left_out in range(len(human_answers))])


@dataclass(frozen=True)
class SoftAccuracyItem:
    """One question to score: the model's raw text (None if it gave no answer) and its 10 human answers."""

    prediction: str | None
    human_answers: Sequence[Any]  # strings, or the annotation's answer dicts where the scorer compares dicts
    answer_type: str | None  # VQAv2's "yes/no" / "number" / "other", VizWiz's "unanswerable" / ...; None if absent
    where: str  # file and question, for the error when the human answers are not ten
    question_type: str | None = None  # VQAv2's "what color is the", ...; None if absent


def soft_accuracy_metrics(items: Sequence[SoftAccuracyItem],
                          score_one: Callable[[str, Sequence[Any]], float] = vqa_accuracy) -> dict[str, float]:
    """accuracy (percent, as the scripts print it), per answer type and per question type, questions and missing
    counts; `score_one(prediction, human_answers)` is the script's per-question score (an unanswered one is 0)."""
    scores: list[float] = []
    by_group: dict[str, list[float]] = {}
    for item in items:
        try:
            score = 0.0 if item.prediction is None else score_one(item.prediction, item.human_answers)
        except ValueError as error:
            raise BenchmarkDataError(f"{item.where}: {error}") from None
        scores.append(score)
        if item.answer_type is not None:
            by_group.setdefault(f"{metric_key(item.answer_type)}/accuracy", []).append(score)
        if item.question_type is not None:
            by_group.setdefault(f"question_type/{metric_key(item.question_type)}", []).append(score)
    metrics: dict[str, float] = {"accuracy": 100.0 * ratio(sum(scores), len(scores)), "questions": len(scores),
                                 "missing": sum(item.prediction is None for item in items)}
    for name, group_scores in sorted(by_group.items()):
        metrics[name] = 100.0 * ratio(sum(group_scores), len(group_scores))
    return metrics


def human_answer_texts(answers: Any, where: str) -> list[str]:
    """VQAv2 / VizWiz list answers as {"answer": ...} objects, TextVQA as plain strings; accept both."""
    if not isinstance(answers, list):
        raise BenchmarkDataError(f"{where}: 'answers' must be a list, got {type(answers).__name__}")
    texts = []
    for answer in answers:
        if isinstance(answer, dict) and "answer" in answer:
            texts.append(str(answer["answer"]))
        elif isinstance(answer, str):
            texts.append(answer)
        else:
            raise BenchmarkDataError(f"{where}: each human answer must be a string or {{'answer': ...}}, "
                                     f"got {answer!r}")
    return texts

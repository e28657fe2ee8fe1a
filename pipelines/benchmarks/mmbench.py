r"""MMBench (en and cn): model_vqa_mmbench.py's prompts, local single-round and circular accuracy, and the
submission table of convert_mmbench_for_submission.py.

Questions: the MMBench TSV (index, question, hint, A..D, image as base64, and on dev: answer, category, ...),
read as pandas.read_table reads it (empty cells and pandas' NA strings are missing). Options are the A..D cells
up to the first missing / "nan" / "none" one. The prompt is `hint + "\n" + question` (just the question when the
hint is missing), then one "\n<letter>. <option>" line per option, then "\nAnswer with the option's letter from the
given choices directly." (cn: "请直接回答选项字母。"); the answer line records the prompt without that last line.
With `all_rounds` (the loader's --all-rounds, which LLaVA's scripts do not pass) each question is asked once per
option, the option *contents* rotated left by one per round while the letters stay A, B, ... in place; each round
records round_id, the rotated options and option_char (option_char[i] is the original letter of the option shown
at position i). An image cell holding another row's index refers to that row's image (newer MMBench TSVs store a
repeated image once); the official loader would fail on it.

Local scoring needs the dev split's `answer` column (the test split is scored by the MMBench server from the
submission). A prediction is the option letter of the answer text (`parse_option_letter`: a leading letter that
is not the start of a word, else an answer equal to one option's text; the server's ChatGPT fallback is not
reproduced), mapped back through the rotation. `accuracy` is single-round: round 0 of each row. `circular_accuracy`
groups rows by index mod 1,000,000 (MMBench's numbering of the circular copies of one question in the TSV) and
counts a group only if every answer of every row and every round in it is right (a row with no answer fails it).

The official submission is an .xlsx, which needs openpyxl (not a dependency here), so `write_submission` writes
the same table as tab-separated text: the TSV minus hint, category, source, image, comment and l2-category, with a
`prediction` column inserted at position 6 holding the text of the last answer line of that index. Open it with
`pandas.read_csv(path, sep="\t").to_excel("submission.xlsx", index=False)` to upload.
"""

from __future__ import annotations

import base64
import binascii
import csv
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    EvalQuestion,
)
from pipelines.benchmarks.records import check_answers, id_key, ratio, warn_missing

LETTERS = ("A", "B", "C", "D")
SUFFIXES = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}
# pandas.read_table's default NA strings (pandas 2.x): these cells arrive in the official loader as NaN.
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
SUBMISSION_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_COLUMN = 6
CIRCULAR_STRIDE = 1_000_000
REQUIRED_COLUMNS = ("index", "question", "A", "B", "image")
SUBMISSION_NAME = "mmbench_submission.tsv"


def is_none(value: str | None) -> bool:
    """model_vqa_mmbench.is_none on a cell as pandas would have read it."""
    return value is None or value in PANDAS_NA or value.lower() in ("nan", "none")


@dataclass(frozen=True)
class MMBenchRow:
    line: int  # line in the TSV where the row starts, for error messages
    cells: dict[str, str]
    options: tuple[str, ...]

    @property
    def index(self) -> str:
        return self.cells["index"]

    def rotated(self, round_id: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(options, option_char) shown in round `round_id`: both rotated left round_id times."""
        letters = LETTERS[:len(self.options)]
        shift = round_id % max(len(self.options), 1)
        return self.options[shift:] + self.options[:shift], letters[shift:] + letters[:shift]

    def prompt(self, round_id: int) -> str:
        """The recorded prompt (without <image> and without the answer-format line)."""
        question = self.cells["question"]
        hint = self.cells.get("hint")
        if not is_none(hint):
            question = f"{hint}\n{question}"
        options, _ = self.rotated(round_id)
        return question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, options))


def read_mmbench_tsv(path: Path) -> tuple[list[str], list[MMBenchRow]]:
    """The header and rows of an MMBench TSV (quoted fields may span lines, as pandas allows)."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's 128 KiB default
    if not Path(path).is_file():
        raise BenchmarkDataError(f"{path}: no such file")
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise BenchmarkDataError(f"{path}: empty file, expected an MMBench TSV with a header line")
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise BenchmarkDataError(f"{path}:1: missing column {', '.join(map(repr, missing))} "
                                     f"(has: {', '.join(header)})")
        rows = []
        line = reader.line_num + 1
        for values in reader:
            if len(values) != len(header):
                raise BenchmarkDataError(f"{path}:{line}: {len(values)} fields, the header has {len(header)}")
            cells = dict(zip(header, values))
            options = []
            for letter in LETTERS:
                if letter not in cells or is_none(cells[letter]):
                    break
                options.append(cells[letter])
            rows.append(MMBenchRow(line, cells, tuple(options)))
            line = reader.line_num + 1
    return header, rows


def parse_option_letter(text: str, options: tuple[str, ...]) -> str | None:
    """The letter (as shown, A.. in place) the answer picks, or None when it picks none."""
    letters = LETTERS[:len(options)]
    answer = text.strip()
    if answer[:1] in letters and (len(answer) == 1 or not answer[1].isalnum()):
        return answer[0]
    bare = answer.rstrip(".").strip().lower()
    for letter, option in zip(letters, options):
        if bare == option.strip().lower():
            return letter
    return None


def circular_group(index: str) -> str:
    return str(int(index) % CIRCULAR_STRIDE) if index.lstrip("-").isdigit() else index


def _question_id(index: str) -> str | int:
    """pandas reads the index column as integers, so the official answer lines carry ints."""
    return int(index) if index.lstrip("-").isdigit() else index


class MMBenchBenchmark(Benchmark):
    def __init__(self, name: str = "mmbench", lang: str = "en", all_rounds: bool = False) -> None:
        if lang not in SUFFIXES:
            raise ValueError(f"MMBench lang must be one of {', '.join(SUFFIXES)}, got {lang!r}")
        self.name, self.lang, self.all_rounds = name, lang, all_rounds

    def load_questions(self, questions_path: Path) -> list[EvalQuestion]:
        _, rows = read_mmbench_tsv(questions_path)
        images = {row.index: row.cells["image"] for row in rows}
        questions = []
        for row in rows:
            image_bytes = _image_bytes(row, images, questions_path)
            for round_id in range(len(row.options) if self.all_rounds else 1):
                options, option_char = self.rotated_lists(row, round_id)
                recorded = row.prompt(round_id)
                questions.append(EvalQuestion(
                    question_id=_question_id(row.index), prompt=f"{recorded}\n{SUFFIXES[self.lang]}",
                    image_bytes=image_bytes, max_new_tokens=LONG_MAX_NEW_TOKENS, recorded_prompt=recorded,
                    metadata={"round_id": round_id, "options": options, "option_char": option_char,
                              "category": row.cells.get("category")}))
        return questions

    @staticmethod
    def rotated_lists(row: MMBenchRow, round_id: int) -> tuple[list[str], list[str]]:
        options, option_char = row.rotated(round_id)
        return list(options), list(option_char)

    def answer_identity(self, answer: dict[str, Any]) -> str:
        return f"{answer['question_id']} round {answer.get('round_id', 0)}"  # circular rounds share a question_id

    def score(self, answers: list[dict[str, Any]], questions_path: Path,
              annotations: Path | None) -> dict[str, float]:
        header, rows = read_mmbench_tsv(questions_path)
        if "answer" not in header:
            raise BenchmarkDataError(f"{questions_path}: no 'answer' column (the test split is scored by the "
                                     "MMBench server: use write_submission)")
        by_index = {row.index: row for row in rows}
        check_answers(answers)
        verdicts: dict[str, dict[int, bool]] = defaultdict(dict)  # row index -> round -> right
        for number, answer in enumerate(answers, start=1):
            row = by_index.get(id_key(answer["question_id"]))
            if row is None:
                raise BenchmarkDataError(f"answer {number}: question_id {answer['question_id']!r} is not an index "
                                         f"of {questions_path}")
            round_id = _round_id(answer, number)
            options, option_char = row.rotated(round_id)
            shown = parse_option_letter(answer["text"], options)
            picked = None if shown is None else option_char[LETTERS.index(shown)]
            verdicts[row.index][round_id] = picked == row.cells["answer"].strip()
        groups: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            groups[circular_group(row.index)].append(row.index)
        single = [verdicts[row.index].get(0, False) for row in rows]
        circular = [all(verdicts[index] and all(verdicts[index].values()) for index in members)
                    for members in groups.values()]
        missing = sum(0 not in verdicts[row.index] for row in rows)
        warn_missing(self.name, missing, len(rows))
        return {"accuracy": 100.0 * ratio(sum(single), len(single)),
                "circular_accuracy": 100.0 * ratio(sum(circular), len(circular)),
                "questions": len(rows), "circular_groups": len(groups), "missing": missing}

    def write_submission(self, answers: list[dict[str, Any]], questions_path: Path, out_dir: Path,
                         annotations: Path | None = None) -> Path:
        header, rows = read_mmbench_tsv(questions_path)
        check_answers(answers)
        predictions = {id_key(answer["question_id"]): answer["text"] for answer in answers}  # last line wins
        columns = [column for column in header if column not in SUBMISSION_DROPPED]
        columns.insert(min(PREDICTION_COLUMN, len(columns)), "prediction")
        out_dir.mkdir(parents=True, exist_ok=True)
        destination = out_dir / SUBMISSION_NAME
        with destination.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                cells = {**row.cells, "prediction": predictions.get(row.index, "")}
                writer.writerow([cells[column] for column in columns])
        return destination


def _round_id(answer: dict[str, Any], number: int) -> int:
    value = answer.get("round_id", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BenchmarkDataError(f"answer {number}: round_id must be a non-negative integer, got {value!r}")
    return value


def _image_bytes(row: MMBenchRow, images: dict[str, str], path: Path) -> bytes:
    encoded = row.cells["image"]
    if encoded in images and encoded != row.index:  # the index of the row that holds this image
        encoded = images[encoded]
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BenchmarkDataError(f"{path}:{row.line}: the image cell is neither base64 data nor the index of "
                                 "another row") from None

"""Score an answer file against a benchmark; prints the metrics as one JSON object on stdout.

    python -m pipelines.benchmarks.score_cli score --benchmark pope --questions llava_pope_test.jsonl \
        --answers answers/merge.jsonl --annotations pope/coco
    python -m pipelines.benchmarks.score_cli score --benchmark synthetic --questions runs/synthetic/test.jsonl \
        --answers answers.jsonl
    python -m pipelines.benchmarks.score_cli score --benchmark my_counting --metric exact \
        --questions my_counting.jsonl --answers answers.jsonl      # your own question file

The metrics include `unmatched_answers` (answer lines whose question is not in the question file: not scored),
`duplicate_answers` (repeats of an earlier line's question: the last is scored) and `unanswered` (questions
without an answer: wrong), each also named in a warning; `--strict` makes any of them an error.

Exit status 0 with the JSON on stdout; 2 with a one-line error on stderr when an input cannot be scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipelines.benchmarks.judge_client import JudgeError
from pipelines.benchmarks.records import read_jsonl
from pipelines.benchmarks.own import METRICS as OWN_METRICS
from pipelines.benchmarks.registry import BENCHMARKS, benchmark_for

PROGRAM = "score"
# An input that cannot be scored (or a judge that cannot be reached) is reported in one line, not a traceback.
REPORTED_ERRORS = (ValueError, OSError, JudgeError)


class UsageError(ValueError):
    """A command line argparse rejected."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipelines.benchmarks.score_cli", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    score = commands.add_parser("score", help="score an answer file")
    score.add_argument("--benchmark", required=True,
                       help=f"one of: {', '.join(sorted(BENCHMARKS))}; or your own benchmark's name, with --metric")
    score.add_argument("--metric", choices=tuple(OWN_METRICS),
                       help="score your own question file with this metric (docs/own-benchmark.md)")
    score.add_argument("--questions", required=True, type=Path, help="the benchmark's question file")
    score.add_argument("--answers", required=True, type=Path, help="answer lines (LLaVA answer jsonl)")
    score.add_argument("--annotations", type=Path, help="ground truth file or folder, where the benchmark needs one")
    score.add_argument("--strict", action="store_true",
                       help="fail on answer lines matching no question, repeated answers and unanswered questions")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        arguments = build_parser().parse_args(argv)
        benchmark = benchmark_for(arguments.benchmark, arguments.metric or "")
        metrics = benchmark.evaluate(read_jsonl(arguments.answers), arguments.questions, arguments.annotations,
                                     strict=arguments.strict)
    except REPORTED_ERRORS as error:
        message = str(error).replace("\n", " ")
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

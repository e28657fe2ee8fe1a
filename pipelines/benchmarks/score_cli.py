"""Score an answer file against a benchmark; prints the metrics as one JSON object on stdout.

    python -m pipelines.benchmarks.score_cli score --benchmark pope --questions llava_pope_test.jsonl \
        --answers answers/merge.jsonl --annotations pope/coco
    python -m pipelines.benchmarks.score_cli score --benchmark synthetic --questions runs/synthetic/test.jsonl \
        --answers answers.jsonl

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
from pipelines.benchmarks.registry import BENCHMARKS, get_benchmark

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
    score.add_argument("--benchmark", required=True, help=f"one of: {', '.join(sorted(BENCHMARKS))}")
    score.add_argument("--questions", required=True, type=Path, help="the benchmark's question file")
    score.add_argument("--answers", required=True, type=Path, help="answer lines (LLaVA answer jsonl)")
    score.add_argument("--annotations", type=Path, help="ground truth file or folder, where the benchmark needs one")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        arguments = build_parser().parse_args(argv)
        benchmark = get_benchmark(arguments.benchmark)
        metrics = benchmark.score(read_jsonl(arguments.answers), arguments.questions, arguments.annotations)
    except REPORTED_ERRORS as error:
        message = str(error).replace("\n", " ")
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

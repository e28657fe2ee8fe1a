"""Score an answer file against a benchmark (jobs/score.py); prints the metrics as one JSON object on stdout.

    python jobs/score.py benchmark=pope questions=llava_pope_test.jsonl answers=answers/merge.jsonl \
        annotations=pope/coco
    python jobs/score.py benchmark=synthetic questions=runs/synthetic/test.jsonl answers=answers.jsonl
    python jobs/score.py benchmark=my_counting metric=exact questions=my_counting.jsonl answers=answers.jsonl

The metrics include `unmatched_answers` (answer lines whose question is not in the question file: not scored),
`duplicate_answers` (repeats of an earlier line's question: the last is scored) and `unanswered` (questions
without an answer: wrong), each also named in a warning; strict=true makes any of them an error.

Exit status 0 with the JSON on stdout; 2 with a one-line error on stderr when an input cannot be scored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from pydantic.dataclasses import dataclass

from pipelines.cli import parse_config, run_job
from pipelines.config import OPTIONS

OwnMetric = Literal["exact", "vqa", "choice", "yesno"]  # pipelines.benchmarks.own.METRICS


@dataclass(config=OPTIONS)
class ScoreConfig:
    benchmark: str = ""
    """A paper benchmark (vqav2, gqa, pope, mme, mmbench, ...), or your own benchmark's name with metric (required)."""
    metric: OwnMetric | None = None
    """Score your own question file with this metric (docs/own-benchmark.md); null for a paper benchmark."""
    questions: str = ""
    """The benchmark's question file (required)."""
    answers: str = ""
    """The answer lines, LLaVA's answer jsonl (required)."""
    annotations: str = ""
    """The ground truth file or folder, where the benchmark needs one."""
    strict: bool = False
    """Fail on answer lines that match no question, repeated answers and unanswered questions."""

    def __post_init__(self) -> None:
        missing = [name for name in ("benchmark", "questions", "answers") if not getattr(self, name)]
        if missing:
            raise ValueError(f"set {', '.join(f'{name}=...' for name in missing)}")


def score(config: ScoreConfig) -> dict:
    from pipelines.benchmarks.records import read_jsonl
    from pipelines.benchmarks.registry import benchmark_for

    benchmark = benchmark_for(config.benchmark, config.metric or "")
    return benchmark.evaluate(read_jsonl(Path(config.answers)), Path(config.questions),
                              Path(config.annotations) if config.annotations else None, strict=config.strict)


def main(argv: list[str] | None = None) -> int:
    from pipelines.benchmarks.judge_client import JudgeError

    def work() -> int:
        print(json.dumps(score(parse_config(ScoreConfig, argv, __doc__)), sort_keys=True))
        return 0

    # An input that cannot be scored (or a judge that cannot be reached) is reported in one line, not a traceback.
    return run_job("score", work, errors=(OSError, JudgeError))


if __name__ == "__main__":
    sys.exit(main())

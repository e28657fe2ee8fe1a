"""Score an answer file made anywhere against a benchmark; prints the metrics as one JSON object.

    python jobs/score.py benchmark=pope questions=llava_pope_test.jsonl answers=answers.jsonl annotations=pope/coco
    python jobs/score.py benchmark=my_counting metric=exact questions=my_counting.jsonl answers=answers.jsonl

Every option: --help. Your own question file: docs/own-benchmark.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.benchmarks.score_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""Stage 1 (pretrain): train the projector and the SP modules with the LLM and the vision tower frozen.

    python jobs/pretrain.py                                  # embedded default: tiny model, synthetic captions
    python jobs/pretrain.py variant=pooling max_steps=50
    python jobs/pretrain.py --config infra/configs/pretrain-paper.yaml model=/models/llava-sp-init data=/data/shards/<id>
    ray job submit --working-dir . --runtime-env infra/runtime_env.yaml -- python jobs/pretrain.py

Prints the final checkpoint (use it as init_from of jobs/finetune.py) and the MLflow run id.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.train.command import run_training_job


def main(argv: list[str] | None = None) -> int:
    return run_training_job("pretrain", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

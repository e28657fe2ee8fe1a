"""Stage 2 (finetune): LoRA on the LLM (or full finetuning) plus the projector/SP modules at their own rate.

    python jobs/finetune.py init_from=runs/train/pretrain-cropping-<hash>/checkpoint_...   # a stage-1 checkpoint dir
    python jobs/finetune.py init_from=mlflow:<stage-1 run id>
    python jobs/finetune.py --config infra/configs/finetune-paper.yaml model=... data=... init_from=...
    ray job submit --working-dir . --runtime-env infra/runtime_env.yaml -- python jobs/finetune.py init_from=mlflow:<run id>

With no init_from it starts from the base model's projector (and says so).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.train.command import run_training_job


def main(argv: list[str] | None = None) -> int:
    return run_training_job("finetune", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

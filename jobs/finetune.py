"""Stage 2 (finetune): LoRA on the LLM (or full finetuning) plus the projector/SP modules at their own rate.

    python jobs/finetune.py init_from=runs/train/pretrain-cropping/checkpoint_...   # a stage-1 checkpoint dir
    python jobs/finetune.py init_from=mlflow:<stage-1 run id>
    python jobs/finetune.py --config infra/configs/finetune-paper.yaml model=... data=... init_from=...
    ray job submit --working-dir . -- python jobs/finetune.py init_from=mlflow:<run id>

With no init_from it starts from the base model's projector (and says so).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job  # noqa: E402
from pipelines.train.config import TrainConfig  # noqa: E402
from pipelines.train.job import run_stage  # noqa: E402



def main(argv: list[str] | None = None) -> int:
    def job() -> int:
        config = parse_config(TrainConfig, ["stage=finetune", *(argv if argv is not None else sys.argv[1:])],
                              __doc__)
        if not config.init_from:
            logging.getLogger("finetune").warning("no init_from: the projector starts from the base model")
        result = run_stage(config)
        print(f"finetune: final loss {result.metrics.get('loss', float('nan')):.4f} after "
              f"{result.metrics.get('step')} steps; model {result.model_dir}; mlflow run {result.run_id}")
        return 0

    return run_job("finetune", job)


if __name__ == "__main__":
    sys.exit(main())

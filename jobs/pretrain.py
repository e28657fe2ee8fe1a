"""Stage 1 (pretrain): train the projector and the SP modules with the LLM and the vision tower frozen.

    python jobs/pretrain.py                                  # embedded default: tiny model, synthetic captions
    python jobs/pretrain.py variant=pooling max_steps=50
    python jobs/pretrain.py --config infra/configs/pretrain-paper.yaml model=/models/llava-sp-init data=/data/shards/<id>
    ray job submit --working-dir . -- python jobs/pretrain.py

Prints the final checkpoint (use it as init_from of jobs/finetune.py) and the MLflow run id.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job  # noqa: E402
from pipelines.train.config import TrainConfig  # noqa: E402
from pipelines.train.job import run_stage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    def job() -> int:
        config = parse_config(TrainConfig, argv, __doc__)
        if config.stage != "pretrain":
            raise ValueError("jobs/pretrain.py runs stage=pretrain; use jobs/finetune.py for stage 2")
        result = run_stage(config)
        print(f"pretrain: final loss {result.metrics.get('loss', float('nan')):.4f} after "
              f"{result.metrics.get('step')} steps; checkpoint {result.checkpoint}; mlflow run {result.run_id}")
        return 0

    return run_job("pretrain", job)


if __name__ == "__main__":
    sys.exit(main())

"""The command line of jobs/pretrain.py and jobs/finetune.py: parse (without torch, so --help is quick), run the
stage, print where the results are."""

from __future__ import annotations

import sys

from pipelines.cli import parse_config, run_job
from pipelines.train.config import TrainConfig


def run_training_job(stage: str, argv: list[str] | None, description: str) -> int:
    def job() -> int:
        config = parse_config(TrainConfig, [f"stage={stage}", *(argv if argv is not None else sys.argv[1:])],
                              description)
        if config.stage != stage:
            raise ValueError(f"this job runs stage={stage}; use jobs/{config.stage}.py for stage={config.stage}")
        from pipelines.train.job import run_stage

        result = run_stage(config)
        print(f"{stage}: final loss {result.metrics.get('loss', float('nan')):.4f} after {result.metrics.get('step')}"
              f" steps; checkpoint {result.checkpoint}; model {result.model_dir}; mlflow run {result.run_id}")
        return 0

    return run_job(stage, job)

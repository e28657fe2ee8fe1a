"""Evaluate LLaVA-SP models on benchmarks (Ray Data batch inference), scored like the official scripts, in MLflow.

    python jobs/evaluate.py                                   # the embedded model on the synthetic test split
    python jobs/evaluate.py 'models=[{name: sp-cropping, variant: cropping}, {name: sp-pooling, variant: pooling}]'
    python jobs/evaluate.py --config infra/configs/evaluate-paper.yaml
    ray job submit --working-dir . --runtime-env infra/runtime_env.yaml -- python jobs/evaluate.py --config infra/configs/evaluate-paper.yaml

    python jobs/evaluate.py 'benchmarks=[{name: kitchen, metric: exact, questions: kitchen.jsonl}]'  # your own file
    python jobs/evaluate.py deploy=true                       # through the project's Serve app, deployed for the run
    python jobs/evaluate.py 'models=[{name: llava-1.5, endpoint: "http://host:8000/v1", served_model: llava-hf/llava-1.5-7b-hf, api_key_env: KEY}]'

Answers are kept in <output_dir>/<model>/<benchmark>/answers.jsonl: a re-run asks only what is missing, from answers
the same model weights, question file and settings made. Every option: --help; benchmarks: pipelines/benchmarks/;
your own question file: docs/own-benchmark.md; an answer file made elsewhere: jobs/score.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job
from pipelines.evaluate.config import EvaluateConfig


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(EvaluateConfig, argv, __doc__)
        from pipelines.evaluate.run import evaluate

        result = evaluate(config)
        print(result.comparison_markdown, end="")
        if result.synthetic_markdown:
            print("\nsynthetic test split, accuracy per question type:\n" + result.synthetic_markdown, end="")
        print(f"\nmlflow: parent run {result.parent_run_id} at {result.tracking_uri} "
              f"(open it with: mlflow ui --backend-store-uri {result.tracking_uri})")
        return 0

    return run_job("evaluate", work)


if __name__ == "__main__":
    sys.exit(main())

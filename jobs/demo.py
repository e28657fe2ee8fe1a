"""The whole pipeline on the embedded default in one command (what `make demo` runs).

    python jobs/demo.py                        # baseline, SP-Cropping and SP-Pooling, end to end (~7 min, 2 CPUs)
    python jobs/demo.py 'variants=[sp-cropping]' finetune_steps=2000   # one variant, trained longer

synthetic data -> Ray Data preprocessing -> stage 1 -> stage 2 (Ray Train + DeepSpeed) for each variant ->
evaluation on the synthetic test split (Ray Data) -> models registered in MLflow -> the Serve endpoint answering
one request with an image. Prints the results table, accuracy per question type against chance, and where to look.
Everything lands under $LLAVA_SP_HOME (default ./runs) and ./mlflow.db. Every option: --help.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job
from pipelines.demo_config import DemoConfig


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(DemoConfig, argv, __doc__)
        from pipelines.demo import run_demo

        result = run_demo(config)
        evaluation = result.evaluation
        print("\n== Training (final loss, stage 1 -> stage 2)")
        print(f"  {'shared LLM':12s} captions {result.base.metrics.get('loss', float('nan')):.3f}"
              f"   mlflow run {result.base.run_id}")
        for name, (stage1, stage2) in result.trained.items():
            print(f"  {name:12s} pretrain {stage1.metrics.get('loss', float('nan')):.3f} "
                  f"-> finetune {stage2.metrics.get('loss', float('nan')):.3f}   mlflow run {stage2.run_id}")
        print("\n== Synthetic test split: accuracy per question type, against chance")
        print(evaluation.synthetic_markdown or evaluation.comparison_markdown)
        print("== Registered models: " + (", ".join(result.registered.values()) or "(registration off)"))
        print(f"== Serve: {result.served_answer}")
        print("\n== Where to look")
        print(f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {evaluation.tracking_uri}  -> http://127.0.0.1:5000"
              "  (experiment llava-sp-demo)")
        print("  Serve:      .venv/bin/python jobs/serve.py 'models=[{name: sp-cropping, source: "
              "\"models:/llava-sp-demo-sp-cropping@demo\"}]'  -> http://127.0.0.1:8000/v1/chat/completions")
        print(f"\ndemo finished in {result.seconds / 60:.1f} min")
        return 0

    return run_job("demo", work)


if __name__ == "__main__":
    sys.exit(main())

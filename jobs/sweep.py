"""The paper's ablations (Tabs. 3-6) as one sweep: train, evaluate and compare the chosen rows in MLflow.

    python jobs/sweep.py                                        # Tab. 6: baseline, +SFE cropping, +SFE+DFI cropping
    python jobs/sweep.py 'rows=[tab4-tokens-1, tab4-tokens-3, tab4-tokens-6, tab4-tokens-12]'
    python jobs/sweep.py rows=[tab3-conv,tab3-transformer] pretrain_steps=40 finetune_steps=60
    python jobs/sweep.py rows=[tab6-dfi-cropping-k16] base_llm=lmsys/vicuna-7b-v1.5 \
        vision_tower=openai/clip-vit-large-patch14-336 pretrain_steps=2000 num_workers=8   # real weights, on GPUs

Rows are the files in infra/configs/ablations/ (one per paper row). Results: an MLflow parent run "sweep" with the
comparison table (ablations.md / .csv) and one child run per row. Every option: --help.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job
from pipelines.sweep_config import SweepConfig, describe_rows


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(SweepConfig, argv, f"{__doc__}\navailable rows:\n{describe_rows()}")
        from pipelines.sweep import run_sweep

        result = run_sweep(config)
        print(result.table_markdown)
        print(f"mlflow: parent run {result.parent_run_id} at {result.tracking_uri}")
        return 0

    return run_job("sweep", work)


if __name__ == "__main__":
    sys.exit(main())

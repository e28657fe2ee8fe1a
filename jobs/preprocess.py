"""Preprocess LLaVA-format data into parquet shards with Ray Data (images -> CLIP crops, conversations -> tokens).

    python jobs/preprocess.py                           # embedded default: synthetic stage-2 rows, tiny model
    python jobs/preprocess.py template=plain            # the synthetic stage-1 captions
    python jobs/preprocess.py --config infra/configs/preprocess-llava665k.yaml model=/models/llava-sp-cropping
    python jobs/preprocess.py data=[my_data.json] image_root=/data/my_images name=my_data   # your own data
    ray job submit --working-dir . --runtime-env infra/runtime_env.yaml -- python jobs/preprocess.py template=plain

Prints read = written + quarantined (by reason); bad rows are listed in <dataset>/quarantine/. Every option: --help.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job
from pipelines.data.config import PreprocessConfig

if TYPE_CHECKING:
    from pipelines.data.preprocess import PreprocessResult


def with_embedded_defaults(config: PreprocessConfig) -> PreprocessConfig:
    """No data: the synthetic set (captions for 'plain', conversations otherwise); no model: the tiny one."""
    from pipelines.defaults import embedded_dataset, embedded_model_dir

    if not config.data:
        dataset = embedded_dataset()
        rows = dataset.pretrain_json if config.template == "plain" else dataset.finetune_json
        config = replace(config, data=[str(rows)], image_root=config.image_root or str(dataset.root))
    if not config.model:
        config = replace(config, model=str(embedded_model_dir()))
    return config


def run(config: PreprocessConfig) -> PreprocessResult:
    from pipelines.data.model_inputs import row_processor_for
    from pipelines.data.preprocess import preprocess
    from pipelines.runtime import init_ray

    init_ray(writes={"output_dir": config.output_dir}, tracks=False)
    config = with_embedded_defaults(config)
    return preprocess(config, row_processor_for(config, config.model))


def main(argv: list[str] | None = None) -> int:
    def job() -> int:
        config = parse_config(PreprocessConfig, argv, __doc__)
        result = run(config)
        print(f"preprocess: {result.summary()}")
        if config.name:
            print(f"preprocess: data set {config.name} = {result.dataset_dir} (train with data={config.name})")
        return 0

    return run_job("preprocess", job)


if __name__ == "__main__":
    sys.exit(main())

"""What jobs/pretrain.py and jobs/finetune.py share: embedded defaults, Ray start-up, the run."""

from __future__ import annotations

import math
import os
from dataclasses import replace

from pipelines.data.model_inputs import row_processor_for
from pipelines.data.preprocess import PreprocessConfig, preprocess
from pipelines.defaults import embedded_dataset, embedded_model_dir, home
from pipelines.runtime import init_ray
from pipelines.train.config import TrainConfig
from pipelines.train.launch import TrainResult, train

STAGE_TEMPLATES = {"pretrain": "plain", "finetune": "vicuna_v1"}


def embedded_data_dir(stage: str, model_dir: str) -> str:
    """Preprocess (or reuse) the synthetic set for this stage: captions for pretrain, conversations for finetune."""
    dataset = embedded_dataset()
    rows = dataset.pretrain_json if stage == "pretrain" else dataset.finetune_json
    config = PreprocessConfig(data=[str(rows)], image_root=str(dataset.root), template=STAGE_TEMPLATES[stage],
                              model=model_dir, output_dir=str(home() / "data"))
    return str(preprocess(config, row_processor_for(config, model_dir)).dataset_dir)


def run_stage(config: TrainConfig) -> TrainResult:
    model_dir = config.model or str(embedded_model_dir(config.variant))
    # Logical CPUs beyond the cores: training workers hold theirs, and Ray Data still needs some to read shards.
    needed = math.ceil(config.num_workers * config.cpus_per_worker) + 1
    init_ray(num_cpus=max(os.cpu_count() or 1, needed))
    data_dir = config.data or embedded_data_dir(config.stage, model_dir)
    return train(replace(config, model=model_dir), model_dir, data_dir)

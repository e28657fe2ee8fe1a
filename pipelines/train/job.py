"""What jobs/pretrain.py and jobs/finetune.py share: embedded defaults, Ray start-up, the run."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace

from pipelines.data.catalog import resolve_data
from pipelines.data.config import PreprocessConfig
from pipelines.data.model_inputs import row_processor_for
from pipelines.data.preprocess import preprocess
from pipelines.defaults import embedded_dataset, embedded_model_dir, home
from pipelines.runtime import init_ray
from pipelines.synthetic import SyntheticDataset
from pipelines.train.config import TrainConfig
from pipelines.train.launch import TrainResult, train
from pipelines.train.run_identity import latest_finished_run

STAGE_TEMPLATES = {"pretrain": "plain", "finetune": "vicuna_v1"}


def embedded_data_dir(stage: str, model_dir: str, dataset: SyntheticDataset | None = None,
                      cpus_per_task: float = 1.0, rows_per_chunk: int = PreprocessConfig.rows_per_chunk) -> str:
    """Preprocess (or reuse) a synthetic set (default: the embedded one) for this stage: captions for pretrain,
    conversations for finetune. cpus_per_task: Ray's CPUs per preprocessing task (more: fewer tasks at once);
    rows_per_chunk: see PreprocessConfig."""
    dataset = dataset or embedded_dataset()
    rows = dataset.pretrain_json if stage == "pretrain" else dataset.finetune_json
    config = PreprocessConfig(data=[str(rows)], image_root=str(dataset.root), template=STAGE_TEMPLATES[stage],
                              model=model_dir, output_dir=str(home() / "data"), num_cpus_per_task=cpus_per_task,
                              rows_per_chunk=rows_per_chunk)
    return str(preprocess(config, row_processor_for(config, model_dir)).dataset_dir)


def latest_stage1_checkpoint(config: TrainConfig) -> str:
    """The final checkpoint of the most recently finished pretrain run of this variant, or "" if there is none."""
    record = latest_finished_run(config.storage_root, "pretrain", config.variant)
    return record.checkpoint if record else ""


def init_ray_for(config: TrainConfig) -> None:
    """Join the job's cluster, or start a local Ray with room for the training workers and Ray Data beside them."""
    # Logical CPUs beyond the cores: training workers hold theirs, and Ray Data still needs some to read shards.
    needed = math.ceil(config.num_workers * config.cpus_per_worker) + 1
    init_ray(num_cpus=max(os.cpu_count() or 1, needed), writes={"storage_path": config.storage_path})


def run_stage(config: TrainConfig) -> TrainResult:
    init_ray_for(config)  # first: a submitted job that would write into Ray's temporary copy fails before any work
    if config.stage == "finetune" and not config.init_from and not config.model:
        # Embedded default: `jobs/pretrain.py && jobs/finetune.py` chains the two stages with no arguments.
        config = replace(config, init_from=latest_stage1_checkpoint(config))
        if config.init_from:
            logging.getLogger(__name__).info("finetune starts from stage-1 checkpoint %s", config.init_from)
    if config.stage == "finetune" and not config.init_from:
        logging.getLogger(__name__).warning("no init_from: the projector starts from the base model's weights")
    model_dir = config.model or str(embedded_model_dir(config.variant))
    catalog = home() / "data"  # where data set names are kept (pipelines/data/catalog.py)
    if config.data_mix:
        data: str | dict[str, float] = {resolve_data(source, catalog): float(weight)
                                        for source, weight in config.data_mix.items()}
    else:
        data = resolve_data(config.data, catalog) or embedded_data_dir(config.stage, model_dir)
    validation = resolve_data(config.validation_data, catalog)
    return train(replace(config, model=model_dir, validation_data=validation), model_dir, data)


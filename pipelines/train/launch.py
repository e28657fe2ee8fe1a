"""Driver side of training: resolve inputs, plan the data, start Ray Train + DeepSpeed, track in MLflow."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.train
import yaml
from ray.train.torch import TorchTrainer
from transformers import AutoTokenizer

from pipelines import tracking
from pipelines.config import flatten
from pipelines.data.idle_pause import pause_when_idle
from pipelines.output import is_verbose
from pipelines.runtime import on_one_machine
from pipelines.train.checkpoint import DEEPSPEED_DIR
from pipelines.train.config import TrainConfig
from pipelines.train.loop import train_func
from pipelines.train.plan import make_plan, plan_table
from pipelines.train.progress import TrainingProgress
from pipelines.train.run_identity import (
    RunRecord,
    check_resumable,
    deciding_settings,
    read_record,
    run_name,
    write_record,
)
from pipelines.train.shards import ShardRowReader, mixed_index, shard_index
from pipelines.train.worker_config import KEY as WORKER_KEY
from pipelines.train.worker_config import Tracker, WorkerConfig
from sp_core.image_processing import LlavaSPImageProcessor

logger = logging.getLogger(__name__)
INFRA = Path(__file__).resolve().parents[2] / "infra"
CHECKPOINT_ARTIFACT = "checkpoint"


@dataclass
class TrainResult:
    checkpoint: Path  # the final checkpoint directory (holds model/ for serving)
    run_id: str
    tracking_uri: str
    metrics: dict

    @property
    def model_dir(self) -> Path:
        return self.checkpoint / "model"


def deepspeed_config(config: TrainConfig, hidden_size: int | None = None) -> dict:
    """infra/deepspeed/zero{stage}.json with its "auto" fields filled from the training config, and ZeRO's bucket
    sizes from the LLM's hidden size as the HF Trainer fills them (else DeepSpeed's defaults: a 1e5-element
    persistence threshold would leave a tiny model's parameters all unpartitioned under ZeRO-3). Precision is left
    to the workers (deepspeed_precision), which know their hardware."""
    settings = json.loads((INFRA / "deepspeed" / f"zero{config.zero_stage}.json").read_text())
    filled = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.samples_per_step,
        "gradient_clipping": config.max_grad_norm,
    }
    settings.update({key: value for key, value in filled.items() if settings.get(key) == "auto"})
    sizes = {"reduce_bucket_size": hidden_size * hidden_size,
             "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
             "stage3_param_persistence_threshold": 10 * hidden_size} if hidden_size else {}
    zero = settings["zero_optimization"]
    for key, value in list(zero.items()):
        if value == "auto":
            if key in sizes:
                zero[key] = sizes[key]
            else:
                del zero[key]  # DeepSpeed's own default
    return settings


def text_hidden_size(model_dir: str) -> int | None:
    """The LLM's hidden size from <model_dir>/config.json (None if it cannot be read there)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    settings = json.loads(path.read_text())
    return (settings.get("text_config") or settings).get("hidden_size")


# What one read task hands a worker at once (Ray Data passes a task's output on when it reaches 128 MiB or the task
# ends). Each task reads every parquet row group its rows touch, and a shuffled block touches most of a data set's,
# so fewer, larger blocks read the data less often; bounding them by bytes keeps paper-size crops in check.
READ_BLOCK_BYTES = 128 * 1024 * 1024


def steps_per_block(config: TrainConfig, image_size: int) -> int:
    """Whole optimizer steps of (size x size x 3) uint8 crops in READ_BLOCK_BYTES: 445 for the demo's 112-px batches
    of 8, 24 for the paper's 336-px batches of 16."""
    step_bytes = 3 * image_size * image_size * config.micro_batch_size * config.gradient_accumulation_steps
    return max(1, READ_BLOCK_BYTES // step_bytes)


def plan_blocks(table: pa.Table, config: TrainConfig, steps: int) -> list[pa.Table]:
    """A worker's plan cut into blocks of `steps` optimizer steps (steps_per_block). Ray Data maps a block in one
    task: a whole plan in one block holds back the first step while all its rows are read, and a block of a few
    steps starts a task (often a fresh worker process) every second, which crowded the cores when three runs trained
    side by side."""
    rows = steps * config.micro_batch_size * config.gradient_accumulation_steps
    return [table.slice(start, rows) for start in range(0, max(table.num_rows, 1), rows)]


def worker_dataset(rows: pa.Table, config: TrainConfig, image_size: int) -> ray.data.Dataset:
    """One worker's planned rows (position, file, row_in_file) -> its training rows, in plan order."""
    blocks = plan_blocks(rows, config, steps_per_block(config, image_size))
    dataset = ray.data.from_arrow(blocks).map_batches(
        # A whole block per call: each parquet row group is then read once per block, not once per micro-batch that
        # has a row in it. One read task at a time: it reads far faster than steps consume, and read-ahead tasks
        # would take cores from training.
        ShardRowReader(), batch_format="pyarrow", batch_size=None, num_cpus=0.25,
        compute=ray.data.TaskPoolStrategy(size=1))
    # Most of the time the dataset waits on training; on one machine its idle executor would spin a core meanwhile.
    return pause_when_idle(dataset) if on_one_machine() else dataset


def validation_tables(config: TrainConfig) -> list[pa.Table]:
    """Each worker's validation rows (position, file, row_in_file, real): the set dealt round-robin, then padded by
    repeating a worker's rows to the same number of whole micro-batches on every worker, so that all of them run
    the same forwards (ZeRO-3 gathers parameters in every forward); padded rows are marked real=False."""
    index = shard_index(config.validation_data)
    if config.max_validation_rows:
        index = index.slice(0, config.max_validation_rows)
    if index.num_rows == 0:
        raise ValueError(f"validation_data={config.validation_data}: the data set has no rows")
    per_rank = math.ceil(index.num_rows / config.num_workers)
    padded = math.ceil(per_rank / config.micro_batch_size) * config.micro_batch_size
    tables = []
    for rank in range(config.num_workers):
        rows = np.arange(rank, index.num_rows, config.num_workers)
        filled = np.resize(rows if len(rows) else np.arange(1), padded)  # repeats its rows (any row if it has none)
        tables.append(pa.table({
            "position": np.arange(padded, dtype=np.int64),
            "file": index.column("file").take(pa.array(filled)),
            "row_in_file": index.column("row_in_file").take(pa.array(filled)),
            "real": np.arange(padded) < len(rows),
        }))
    return tables


def resolve_stage1(init_from: str, uri: str) -> Path | None:
    """A stage-1 checkpoint dir from a path or "mlflow:<run_id>"."""
    if not init_from:
        return None
    if init_from.startswith("mlflow:"):
        return tracking.run_artifact_dir(uri, init_from.split(":", 1)[1], CHECKPOINT_ARTIFACT)
    path = Path(init_from)
    if not (path / "projector.safetensors").is_file():
        raise FileNotFoundError(f"init_from={init_from}: no projector.safetensors there (a stage-1 checkpoint dir?)")
    return path


def train(config: TrainConfig, model_dir: str, data_dir: str | dict[str, float]) -> TrainResult:
    """Run one stage (Ray must be initialised) on a data set folder, or on several, weighted (folder -> weight).
    Running the same run name again resumes it when its deciding settings are unchanged (run_identity), in the same
    MLflow run; a finished one is reused as it is."""
    name = run_name(config, data_dir)
    run_dir = config.storage_root / name
    settings = deciding_settings(config, data_dir)
    record = read_record(run_dir)
    if record is not None:
        changed = check_resumable(run_dir, record, settings, force=config.resume == "force")
        finished = record.finished and (Path(record.checkpoint) / "model").is_dir()
        if finished and not changed and not config.resume_from:
            logger.info("run %s already finished with these settings: reusing its checkpoint %s (mlflow run %s)",
                        name, record.checkpoint, record.mlflow_run_id)
            return TrainResult(Path(record.checkpoint), record.mlflow_run_id, record.tracking_uri, record.metrics)
    sources = data_dir if isinstance(data_dir, dict) else {data_dir: 1.0}
    index = mixed_index(sources, config.seed)
    plan = make_plan(index.column("modality_length").to_numpy(), config.num_workers, config.micro_batch_size,
                     config.gradient_accumulation_steps, config.epochs, config.seed, config.max_steps)
    ray.data.DataContext.get_current().enable_progress_bars = False  # per-step metrics go to MLflow instead
    image_processor = LlavaSPImageProcessor.from_pretrained_dir(model_dir)
    datasets = {f"rank{rank}": worker_dataset(plan_table(plan, rank, index), config, image_processor.image_size)
                for rank in range(config.num_workers)}
    validation_rows = []
    if config.validation_data:
        for rank, table in enumerate(validation_tables(config)):
            datasets[f"validation{rank}"] = worker_dataset(table, config, image_processor.image_size)
            validation_rows.append(int(pc.sum(table.column("real")).as_py()))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    uri, run_id = _tracking_run(config, name, record, sources)
    write_record(run_dir, RunRecord(settings, uri, run_id))
    tracking.log_params(uri, run_id, {**flatten(asdict(config)), "world_size": config.num_workers,
                                      "model_dir": model_dir, "data_dir": data_dir, "plan_steps": plan.steps,
                                      "train_rows": index.num_rows, "run_name": name})
    stage1 = resolve_stage1(config.init_from, uri)
    worker = WorkerConfig(
        train=config, model_dir=model_dir, stage1_checkpoint=str(stage1) if stage1 else None, plan_steps=plan.steps,
        deepspeed=deepspeed_config(config, text_hidden_size(model_dir)), pad_token_id=tokenizer.pad_token_id,
        image_processor=image_processor, tracker=Tracker(uri, run_id),
        resume_from=_checkpoint_to_resume_from(config.resume_from), validation_rows=validation_rows)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={WORKER_KEY: worker},
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                               resources_per_worker={"CPU": config.cpus_per_worker},
                                               placement_strategy=config.placement_strategy),
        datasets=datasets,
        # Every worker reads only its own planned dataset, in order.
        dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                            execution_options=ray.data.ExecutionOptions(preserve_order=True)),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(config.storage_root),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
    )
    try:
        if is_verbose():  # the workers' logs reach the console
            result = trainer.fit()
        else:
            with TrainingProgress(uri, run_id, name, plan.steps):
                result = trainer.fit()
    except BaseException:
        from mlflow import MlflowClient

        MlflowClient(uri).set_terminated(run_id, status="FAILED")
        raise
    checkpoint = Path(result.checkpoint.path)
    metrics = dict(result.metrics or {})
    _log_artifacts(uri, run_id, config, checkpoint)
    write_record(run_dir, RunRecord(settings, uri, run_id, finished=True, checkpoint=str(checkpoint),
                                    metrics=metrics))
    return TrainResult(checkpoint, run_id, uri, metrics)


def _tracking_run(config: TrainConfig, name: str, record: RunRecord | None,
                  sources: dict[str, float]) -> tuple[str, str]:
    """The MLflow run of this training run: the one it was started with (a resumed run goes on in it, its metrics
    at their steps), or a new one."""
    from mlflow import MlflowClient

    uri = tracking.tracking_uri()
    if record is not None and record.tracking_uri == uri and _run_exists(uri, record.mlflow_run_id):
        MlflowClient(uri).update_run(record.mlflow_run_id, status="RUNNING")
        logger.info("run %s resumes in mlflow run %s", name, record.mlflow_run_id)
        return uri, record.mlflow_run_id
    tags = {"stage": config.stage, "variant": config.variant, "dataset": ",".join(Path(d).name for d in sources),
            **tracking.source_tags()}
    return tracking.start_run(config.experiment, name, tags=tags)


def _run_exists(uri: str, run_id: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def _checkpoint_to_resume_from(path: str) -> str | None:
    """The checkpoint a new run starts from (resume_from), checked on the driver before any worker starts."""
    if not path:
        return None
    if not (Path(path) / DEEPSPEED_DIR).is_dir():
        raise FileNotFoundError(f"resume_from={path}: not a training checkpoint (no {DEEPSPEED_DIR}/ in it); give a "
                                "checkpoint_* directory of a run")
    return str(Path(path).absolute())


def _log_artifacts(uri: str, run_id: str, config: TrainConfig, checkpoint: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.log_text(run_id, yaml.safe_dump(asdict(config), sort_keys=False), "config.yaml")
    for item in sorted(checkpoint.iterdir()):  # the weights and state; DeepSpeed's optimizer state stays with Ray
        if item.is_dir() and item.name != "deepspeed":
            client.log_artifacts(run_id, str(item), f"{CHECKPOINT_ARTIFACT}/{item.name}")
        elif item.is_file():
            client.log_artifact(run_id, str(item), CHECKPOINT_ARTIFACT)
    tracking.log_metric_curves(uri, run_id)
    client.set_terminated(run_id)

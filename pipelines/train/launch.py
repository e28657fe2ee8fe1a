"""Driver side of training: resolve inputs, plan the data, start Ray Train + DeepSpeed, track in MLflow."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import ray
import ray.train
import yaml
from ray.train.torch import TorchTrainer
from transformers import AutoTokenizer

from pipelines import tracking
from pipelines.config import flatten
from pipelines.data.idle_pause import pause_when_idle
from pipelines.train.config import TrainConfig
from pipelines.train.loop import train_func
from pipelines.train.model_setup import resolve_precision
from pipelines.train.plan import make_plan, plan_table
from pipelines.train.shards import ShardRowReader, shard_index
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
    persistence threshold would leave a tiny model's parameters all unpartitioned under ZeRO-3)."""
    settings = json.loads((INFRA / "deepspeed" / f"zero{config.zero_stage}.json").read_text())
    filled = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.samples_per_step,
        "gradient_clipping": config.max_grad_norm,
    }
    settings.update({key: value for key, value in filled.items() if settings.get(key) == "auto"})
    settings["bf16"] = {"enabled": resolve_precision(config) == "bf16"}
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
    return pause_when_idle(ray.data.from_arrow(blocks).map_batches(
        # A whole block per call: each parquet row group is then read once per block, not once per micro-batch that
        # has a row in it (8-row batches read 32x the rows they used). One read task at a time: it reads far faster
        # than steps consume, and read-ahead tasks would take cores from training. Most of the time the dataset waits
        # on training, and pause_when_idle keeps its executor from spinning a core in the worker meanwhile.
        ShardRowReader(), batch_format="pyarrow", batch_size=None, num_cpus=0.25,
        compute=ray.data.TaskPoolStrategy(size=1)))


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


def train(config: TrainConfig, model_dir: str, data_dir: str) -> TrainResult:
    """Run one stage (Ray must be initialised). Re-running with the same run_name and storage_path resumes."""
    index = shard_index(data_dir)
    plan = make_plan(index.column("modality_length").to_numpy(), config.num_workers, config.micro_batch_size,
                     config.gradient_accumulation_steps, config.epochs, config.seed, config.max_steps)
    ray.data.DataContext.get_current().enable_progress_bars = False  # per-step metrics go to MLflow instead
    image_processor = LlavaSPImageProcessor.from_pretrained_dir(model_dir)
    datasets = {f"rank{rank}": worker_dataset(plan_table(plan, rank, index), config, image_processor.image_size)
                for rank in range(config.num_workers)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    uri, run_id = tracking.start_run(config.experiment, config.name, tags={"stage": config.stage,
                                                                           "variant": config.variant})
    tracking.log_params(uri, run_id, {**flatten(asdict(config)), "world_size": config.num_workers,
                                      "model_dir": model_dir, "data_dir": data_dir, "plan_steps": plan.steps,
                                      "train_rows": index.num_rows})
    stage1 = resolve_stage1(config.init_from, uri)
    loop_config = {
        "train": asdict(config),
        "model_dir": model_dir,
        "stage1_checkpoint": str(stage1) if stage1 else None,
        "plan_steps": plan.steps,
        "deepspeed": deepspeed_config(config, text_hidden_size(model_dir)),
        "pad_token_id": tokenizer.pad_token_id,
        "image_processor": asdict(image_processor),
        "tracker": {"uri": uri, "run_id": run_id},
    }
    trainer = TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                               resources_per_worker={"CPU": config.cpus_per_worker},
                                               placement_strategy=config.placement_strategy),
        datasets=datasets,
        # Every worker reads only its own planned dataset, in order.
        dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                            execution_options=ray.data.ExecutionOptions(preserve_order=True)),
        run_config=ray.train.RunConfig(
            name=config.name,
            storage_path=str(Path(config.storage_path).absolute()),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
    )
    try:
        result = trainer.fit()
    except BaseException:
        from mlflow import MlflowClient

        MlflowClient(uri).set_terminated(run_id, status="FAILED")
        raise
    checkpoint = Path(result.checkpoint.path)
    _log_artifacts(uri, run_id, config, checkpoint)
    return TrainResult(checkpoint, run_id, uri, dict(result.metrics or {}))


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

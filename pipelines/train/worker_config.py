"""What the driver hands every training worker: one typed object in Ray Train's train_loop_config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.train.config import TrainConfig
from sp_core.image_processing import LlavaSPImageProcessor

KEY = "worker"  # train_loop_config = {KEY: WorkerConfig(...)}: Ray Train wants a dict


@dataclass(frozen=True)
class Tracker:
    """The MLflow run that rank 0 logs each step's metrics to."""

    uri: str
    run_id: str


@dataclass(frozen=True)
class WorkerConfig:
    train: TrainConfig
    model_dir: str  # the base model (config, tokenizer, weights)
    stage1_checkpoint: str | None  # stage 2: the stage-1 checkpoint whose projector (and LLM) it starts from
    plan_steps: int  # optimizer steps in the training plan
    # infra/deepspeed/zero<stage>.json filled from the config, except bf16 / fp16: each worker sets those for the
    # hardware it runs on (deepspeed_precision), since the driver may have no GPU
    deepspeed: dict[str, Any]
    pad_token_id: int
    image_processor: LlavaSPImageProcessor
    tracker: Tracker | None
    resume_from: str | None  # a checkpoint of another run to start from (Ray Train's own checkpoint wins)
    validation_rows: list[int] = field(default_factory=list)  # per rank: its real rows (the rest repeat them)

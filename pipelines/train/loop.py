"""The per-worker training function: plain PyTorch + DeepSpeed, with the Ray touchpoints marked [ray].

Loss normalisation: the loss of an optimizer step is the mean over every target token of the step, across
micro-batches and workers (not a mean of per-batch means, which would overweight short samples). Each micro-batch's
summed token loss is scaled by workers x accumulation / (target tokens of the whole step), because DeepSpeed divides
by the accumulation steps and averages gradients over workers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import deepspeed
import ray.train
import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import get_scheduler

from pipelines.train.checkpoint import (
    DEEPSPEED_DIR,
    DEEPSPEED_TAG,
    export_model,
    read_trainer_state,
    save_probe,
    save_trained_weights,
    write_trainer_state,
)
from pipelines.train.config import LR_SCHEDULERS, TrainConfig
from pipelines.train.data import collate, target_tokens, without_right_padding_mask
from pipelines.train.deepspeed_cpu import skip_shared_memory_op
from pipelines.train.model_setup import (
    build_stage_model,
    deepspeed_precision,
    parameter_groups,
    resolve_precision,
    unwrap,
)
from pipelines.train.worker_config import KEY as WORKER_KEY
from pipelines.train.worker_config import Tracker, WorkerConfig
from sp_core.image_processing import LlavaSPImageProcessor

logger = logging.getLogger(__name__)


def train_func(loop_config: dict[str, WorkerConfig]) -> None:
    worker = loop_config[WORKER_KEY]
    config = worker.train
    context = ray.train.get_context()  # [ray]
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config.torch_threads)
    if not config.use_gpu:
        skip_shared_memory_op()
    deepspeed.init_distributed(dist_backend="nccl" if config.use_gpu else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if config.use_gpu else torch.device("cpu")
    precision = resolve_precision(config)  # here, where the GPUs are: the weights and DeepSpeed agree on it

    stage1 = Path(worker.stage1_checkpoint) if worker.stage1_checkpoint else None
    torch.manual_seed(config.seed)  # LoRA's initial A matrices come from the global generator
    model = build_stage_model(config, worker.model_dir, stage1, precision)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=(0.9, 0.999))
    total_steps = worker.plan_steps
    scheduler = make_scheduler(optimizer, config, total_steps)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_precision(worker.deepspeed, precision))

    start_step = 0
    checkpoint = ray.train.get_checkpoint()  # [ray] set after a worker failure or when resuming a stopped run
    if checkpoint is None and worker.resume_from:  # a new run that starts from another run's checkpoint
        checkpoint = ray.train.Checkpoint.from_directory(worker.resume_from)
    if checkpoint:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_module_strict=False)
            start_step = read_trainer_state(Path(directory))["step"]
        logger.info("rank %d resumes at step %d", rank, start_step)

    image_processor = worker.image_processor
    image_shape = (3, image_processor.image_size, image_processor.image_size)
    shard = ray.train.get_dataset_shard(f"rank{rank}")  # [ray] this worker's planned rows, in plan order
    batches = shard.iter_batches(batch_size=config.micro_batch_size, batch_format="pyarrow", prefetch_batches=2)
    micro_batches = itertools.islice(batches, start_step * config.gradient_accumulation_steps, None)
    tracker = worker.tracker if rank == 0 else None
    metrics_logger = _metrics_logger(tracker)

    for step in range(start_step, total_steps):
        started = time.perf_counter()
        step_batches = [collate(next(micro_batches), worker.pad_token_id, image_processor)
                        for _ in range(config.gradient_accumulation_steps)]
        counts = torch.tensor([sum(target_tokens(b["labels"]) for b in step_batches),
                               sum(int(b["attention_mask"].sum()) for b in step_batches),
                               sum(len(b["input_ids"]) for b in step_batches)], dtype=torch.float64)
        dist.all_reduce(counts)
        global_targets, global_tokens, global_samples = counts.tolist()
        torch.manual_seed(config.seed + 1_000_003 * step + rank)  # dropout masks depend on the step, not history
        step_loss = torch.zeros((), dtype=torch.float64)
        for batch in step_batches:
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            loss_sum = _summed_token_loss(engine, batch, image_shape)
            engine.backward(loss_sum * world * config.gradient_accumulation_steps / max(global_targets, 1.0))
            engine.step()
            step_loss += loss_sum.detach().double().cpu()
        dist.all_reduce(step_loss)
        seconds = time.perf_counter() - started
        metrics = {
            "loss": step_loss.item() / max(global_targets, 1.0),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": float(engine.get_global_grad_norm() or 0.0),
            "tokens_per_s": global_tokens / seconds,
            "samples_per_s": global_samples / seconds,
            "step": step + 1,
        }
        final = step + 1 == total_steps
        validates = final or (config.eval_every and (step + 1) % config.eval_every == 0)
        if worker.validation_rows and validates:
            metrics["val_loss"] = _validation_loss(engine, rank, worker, image_processor, image_shape, device)
        if metrics_logger and ((step + 1) % config.log_every == 0 or "val_loss" in metrics):
            metrics_logger(metrics, step + 1)
        if (step + 1) % config.checkpoint_every == 0 or final:
            probe = step_batches[-1] if final else None
            _checkpoint_and_report(engine, worker, rank, world, metrics, probe)  # [ray]


@torch.no_grad()
def _validation_loss(engine: deepspeed.DeepSpeedEngine, rank: int, worker: WorkerConfig,
                     image_processor: LlavaSPImageProcessor, image_shape: tuple[int, int, int],
                     device: torch.device) -> float:
    """The mean token loss over the validation set (every worker its share; padding rows count nothing), with
    dropout off."""
    config = worker.train
    real_rows = worker.validation_rows[rank]
    shard = ray.train.get_dataset_shard(f"validation{rank}")  # [ray] this worker's validation rows, in order
    totals = torch.zeros(2, dtype=torch.float64)  # summed token loss, target tokens
    seen = 0
    engine.eval()
    for rows in shard.iter_batches(batch_size=config.micro_batch_size, batch_format="pyarrow"):
        batch = collate(rows, worker.pad_token_id, image_processor)
        batch["labels"][torch.arange(seen, seen + len(batch["labels"])) >= real_rows] = -100
        seen += len(batch["labels"])
        totals[1] += target_tokens(batch["labels"])
        totals[0] += _summed_token_loss(engine, {name: tensor.to(device) for name, tensor in batch.items()},
                                        image_shape).double().cpu()
    engine.train()
    dist.all_reduce(totals)
    return (totals[0] / totals[1].clamp(min=1.0)).item()


def _summed_token_loss(engine: deepspeed.DeepSpeedEngine, batch: dict[str, torch.Tensor],
                       image_shape: tuple[int, int, int]) -> torch.Tensor:
    labels = batch.pop("labels")
    batch = without_right_padding_mask(batch)
    with _blank_image_if_text_only(engine, batch, image_shape):
        logits = engine(**batch).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")


@contextlib.contextmanager
def _blank_image_if_text_only(engine: deepspeed.DeepSpeedEngine, batch: dict[str, torch.Tensor],
                              image_shape: tuple[int, int, int]):
    """A text-only micro-batch leaves the projector out of the graph, so its gradients would never be reduced on this
    worker while another worker reduces them: DeepSpeed's collectives would no longer pair up. As LLaVA does with a
    blank image for text-only samples, put the projector in the graph at zero weight.

    It runs where an image batch computes its image features (LLaVA embeds the tokens, then encodes the images):
    under ZeRO-3 every module's forward and backward gathers its parameters from all ranks, so a worker with text
    only must run the vision tower and projector at the same point in the module order as a worker with images."""
    if "pixel_values" in batch:
        yield
        return
    model = unwrap(engine.module)
    blank = torch.zeros((1, *image_shape), dtype=next(model.parameters()).dtype, device=batch["input_ids"].device)

    def add_blank_image(module, args, embeddings):
        return embeddings + 0.0 * model.image_features(blank).sum()

    hook = model.get_input_embeddings().register_forward_hook(add_blank_image)
    try:
        yield
    finally:
        hook.remove()


def _broadcast_probe(probe: dict[str, torch.Tensor] | None, rank: int) -> dict[str, torch.Tensor]:
    """Rank 0's probe batch on every rank (under ZeRO-3 the probe's forward needs all ranks, on the same inputs)."""
    box = [{name: tensor.cpu() for name, tensor in probe.items()} if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _checkpoint_and_report(engine: deepspeed.DeepSpeedEngine, worker: WorkerConfig, rank: int, world: int,
                           metrics: dict, probe: dict[str, torch.Tensor] | None) -> None:
    """Every rank saves its DeepSpeed state; rank 0 the trained weights (and at the end the whole model, plus the
    live model's logits on its last micro-batch, so a reload can be checked against them).

    Every rank runs every step below in the same order: under ZeRO-3 reading full weights and running the probe's
    forward are collectives (a rank that skipped one would leave the others waiting forever). Only rank 0 writes."""
    config = worker.train
    final = probe is not None
    write = rank == 0
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        engine.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
        save_trained_weights(engine.module, directory, config.trains_llm, write=write)
        if write:
            write_trainer_state(directory, {"step": metrics["step"], "world_size": world,
                                            "samples_seen": metrics["step"] * config.samples_per_step,
                                            "final": final, "config": asdict(config)})
        if final:
            save_probe(engine.module, _broadcast_probe(probe, rank), directory, write=write)
            export_model(engine.module, worker.model_dir, directory, write=write)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(temporary))  # [ray] a barrier


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over warmup_ratio of the steps, then config.lr_scheduler."""
    return get_scheduler(LR_SCHEDULERS[config.lr_scheduler], optimizer,
                         num_warmup_steps=math.ceil(config.warmup_ratio * total_steps), num_training_steps=total_steps)


def _metrics_logger(tracker: Tracker | None):
    """Rank 0 logs every step's metrics to the driver's MLflow run."""
    if not tracker:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracker.uri)

    def log(metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(tracker.run_id, metrics=[Metric(key, float(value), now, step)
                                                     for key, value in metrics.items() if key != "step"])

    return log

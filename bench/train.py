"""Training step time: Ray Train + DeepSpeed vs a plain single-process PyTorch loop, and 1 vs 2 workers.

    .venv/bin/python -m bench.train [--steps 30] [--stage pretrain|finetune]

Same tiny model, same stage setup (frozen parts, LoRA), same micro-batches from the same shards, one torch
thread per process. Step times are medians over the steps after the first three (warm-up excluded); the Ray
numbers are the per-step wall times the workers log to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import torch
from mlflow import MlflowClient
from transformers import AutoTokenizer

from pipelines.defaults import embedded_model_dir
from pipelines.train.config import TrainConfig
from pipelines.train.data import collate, target_tokens, without_right_padding_mask
from pipelines.train.job import embedded_data_dir, run_stage
from pipelines.train.model_setup import (
    build_stage_model,
    parameter_groups,
    resolve_precision,
)
from pipelines.train.shards import shard_files
from sp_core.image_processing import LlavaSPImageProcessor


def plain_step_seconds(config: TrainConfig, model_dir: str, data_dir: str, steps: int) -> float:
    """The reference: one process, no Ray, no DeepSpeed, the same loss and optimizer."""
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    model = build_stage_model(config, model_dir, None, resolve_precision(config))
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr)
    table = pq.read_table(shard_files(data_dir)[0])
    processor = LlavaSPImageProcessor.from_pretrained_dir(model_dir)
    pad = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    batches = [collate(table.slice(i * config.micro_batch_size, config.micro_batch_size), pad, processor)
               for i in range(table.num_rows // config.micro_batch_size)]
    times = []
    for step in range(steps):
        started = time.perf_counter()
        batch = dict(batches[step % len(batches)])
        labels = batch.pop("labels")
        logits = model(**without_right_padding_mask(batch)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                 ignore_index=-100, reduction="sum") / max(target_tokens(labels), 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def ray_step_seconds(config: TrainConfig) -> tuple[float, float]:
    """(median step seconds, median samples/s) of a Ray Train + DeepSpeed run, from its MLflow metrics."""
    result = run_stage(config)
    client = MlflowClient(result.tracking_uri)
    rates = [m.value for m in sorted(client.get_metric_history(result.run_id, "samples_per_s"), key=lambda m: m.step)]
    samples_per_s = statistics.median(rates[3:])
    return config.samples_per_step / samples_per_s, samples_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stage", default="pretrain", choices=("pretrain", "finetune"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ.setdefault("LLAVA_SP_HOME", str(work / "home"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    base = TrainConfig(stage=args.stage, max_steps=args.steps, micro_batch_size=4, checkpoint_every=10_000,
                       lora_r=8, lora_alpha=16, storage_path=str(work / "runs"), num_workers=1)
    model_dir = str(embedded_model_dir(base.variant))
    from pipelines.runtime import init_ray

    init_ray(num_cpus=max(os.cpu_count() or 1, 3))
    data_dir = embedded_data_dir(base.stage, model_dir)
    base = replace(base, model=model_dir, data=data_dir)

    plain = plain_step_seconds(base, model_dir, data_dir, args.steps)
    one_step, one_rate = ray_step_seconds(replace(base, run_name="bench-1-worker"))
    _, two_rate = ray_step_seconds(replace(base, num_workers=2, run_name="bench-2-workers"))
    print(f"train ({args.stage}, micro-batch {base.micro_batch_size}, 1 thread/worker): plain PyTorch "
          f"{plain * 1000:.1f} ms/step, Ray Train + DeepSpeed (1 worker) {one_step * 1000:.1f} ms/step, "
          f"ratio {one_step / plain:.3f} (goal <= 1.10)")
    print(f"train: samples/s 1 worker {one_rate:.1f}, 2 workers {two_rate:.1f}, ratio {two_rate / one_rate:.2f} "
          f"(ideal 2.0 on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()

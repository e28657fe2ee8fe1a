"""The order in which samples are trained on: LLaVA's modality-length grouping, laid out per worker and step.

Computed once in the driver from the shards' small columns (never the pixels), seeded, so that every worker, every
restart and every resumed run sees exactly the same micro-batches: the data position in a checkpoint is then just
a step number.

LLaVA (llava_trainer.py, group_by_modality_length): image and text-only samples are never mixed in a megabatch
of world_size x batch samples (world = workers x accumulation); inside a megabatch, samples are sorted by length and
dealt to workers so that their token counts are even; megabatches are shuffled; the leftovers of both modalities
form one last mixed megabatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class TrainingPlan:
    """Row ids (indices into the shard index) per worker, in training order, and the number of optimizer steps."""

    per_worker: list[np.ndarray]  # per_worker[rank][k] = row index of that worker's k-th sample
    steps: int


def _split_to_even_chunks(indices: list[int], lengths: np.ndarray, chunks: int) -> list[list[int]]:
    """Deal indices (longest first) to the chunk with the fewest tokens that still has room."""
    if len(indices) % chunks:
        return [indices[i::chunks] for i in range(chunks)]
    capacity = len(indices) // chunks
    result: list[list[int]] = [[] for _ in range(chunks)]
    totals = [0] * chunks
    for index in indices:
        target = min((c for c in range(chunks) if len(result[c]) < capacity), key=lambda c: totals[c])
        result[target].append(index)
        totals[target] += int(lengths[index])
    return result


def _length_grouped(indices: np.ndarray, lengths: np.ndarray, megabatch: int, chunks: int,
                    rng: np.random.Generator) -> list[list[int]]:
    shuffled = indices[rng.permutation(len(indices))]
    megabatches = []
    for start in range(0, len(shuffled), megabatch):
        group = sorted(shuffled[start : start + megabatch].tolist(), key=lambda i: -lengths[i])
        megabatches.append([i for chunk in _split_to_even_chunks(group, lengths, chunks) for i in chunk])
    return megabatches


def modality_length_grouped_order(modality_lengths: np.ndarray, batch_size: int, world: int,
                                  rng: np.random.Generator) -> list[int]:
    """One epoch's order of sample indices (LLaVA's get_modality_length_grouped_indices)."""
    lengths = np.abs(modality_lengths)
    megabatch = batch_size * world
    image = np.flatnonzero(modality_lengths > 0)
    text = np.flatnonzero(modality_lengths < 0)
    if len(image) == 0 or len(text) == 0:
        return [i for group in _length_grouped(np.arange(len(lengths)), lengths, megabatch, world, rng) for i in group]
    image_groups = _length_grouped(image, lengths, megabatch, world, rng)
    text_groups = _length_grouped(text, lengths, megabatch, world, rng)
    leftovers = sorted(image_groups.pop() + text_groups.pop())  # the two partial megabatches, merged
    groups = image_groups + text_groups
    groups = [groups[i] for i in rng.permutation(len(groups))]
    return [i for group in groups for i in group] + leftovers


def make_plan(modality_lengths: np.ndarray, workers: int, micro_batch: int, accumulation: int, epochs: int,
              seed: int, max_steps: int = 0) -> TrainingPlan:
    """Deal each epoch's order into micro-batches: micro-batch m goes to worker m % workers (as accelerate
    shards a batch sampler). A last partial step is completed with the epoch's first samples, so that every worker
    runs the same number of steps and no sample is dropped. With max_steps set, `epochs` is ignored (as in HF's
    Trainer) and the plan holds exactly max_steps steps, over as many epochs as that takes."""
    if len(modality_lengths) == 0:
        raise ValueError("the training data has no rows")
    rng = np.random.default_rng(seed)
    per_step = workers * micro_batch * accumulation
    if max_steps:
        steps_per_epoch = math.ceil(len(modality_lengths) / per_step)  # each epoch is padded to whole steps below
        epochs = math.ceil(max_steps / steps_per_epoch)
    order: list[int] = []
    for _ in range(epochs):
        epoch = modality_length_grouped_order(modality_lengths, micro_batch, workers * accumulation, rng)
        missing = -len(epoch) % per_step
        order.extend(epoch + (epoch * (missing // len(epoch) + 1))[:missing])
    steps = len(order) // per_step
    if max_steps:
        steps = min(steps, max_steps)
        order = order[: steps * per_step]
    micro_batches = np.asarray(order, dtype=np.int64).reshape(-1, micro_batch)  # (steps*workers*accum, micro)
    per_worker = [micro_batches[rank::workers].reshape(-1) for rank in range(workers)]
    return TrainingPlan(per_worker, steps)


def plan_table(plan: TrainingPlan, rank: int, index: pa.Table) -> pa.Table:
    """The rows worker `rank` reads, in order: (position, file, row_in_file) from the shard index."""
    rows = plan.per_worker[rank]
    return pa.table({
        "position": np.arange(len(rows), dtype=np.int64),
        "file": index.column("file").take(pa.array(rows)),
        "row_in_file": index.column("row_in_file").take(pa.array(rows)),
    })

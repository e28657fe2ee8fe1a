"""The collator: planned shard rows (pipelines.train.shards) -> padded model inputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from sp_core.conversation import IGNORE_INDEX
from sp_core.image_processing import LlavaSPImageProcessor


def collate(batch: pa.Table, pad_token_id: int, image_processor: LlavaSPImageProcessor) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / labels / attention_mask, and normalised pixels of the image rows, in row order."""
    input_ids = batch.column("input_ids").to_pylist()
    labels = batch.column("labels").to_pylist()
    longest = max(len(ids) for ids in input_ids)
    ids_tensor = torch.full((len(input_ids), longest), pad_token_id, dtype=torch.long)
    label_tensor = torch.full((len(input_ids), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(input_ids), longest), dtype=torch.long)
    for i, (ids, target) in enumerate(zip(input_ids, labels)):
        ids_tensor[i, : len(ids)] = torch.tensor(ids)
        label_tensor[i, : len(target)] = torch.tensor(target)
        mask[i, : len(ids)] = 1
    result = {"input_ids": ids_tensor, "labels": label_tensor, "attention_mask": mask}
    images = [raw for raw, has in zip(batch.column("pixel_values").to_pylist(), batch.column("has_image").to_pylist())
              if has]
    if images:
        size = image_processor.image_size
        crops = np.stack([np.frombuffer(raw, dtype=np.uint8).reshape(size, size, 3) for raw in images])
        result["pixel_values"] = image_processor.normalize(crops)
    return result


def without_right_padding_mask(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its attention_mask when every row is right-padded (ones, then zeros); else the batch.

    Under causal attention no real token sees the pads after it, and the pads carry no target, so the mask changes
    nothing the loss reads. Without it the attention takes its causal path, which skips the future half of the score
    matrix instead of computing and then masking it, on a CPU as with a GPU's flash kernels (docs/benchmarks.md).
    Position ids do not depend on the mask in training
    (they count from 0 in every row). A mask with a hole (left padding, packed rows) is kept."""
    mask = batch.get("attention_mask")
    if mask is None or not torch.equal(mask.cummin(dim=1).values, mask):
        return batch
    return {name: tensor for name, tensor in batch.items() if name != "attention_mask"}


def target_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry loss after the causal shift."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())

"""Rows joining and leaving a running batch's KV cache, for continuous batching.

transformers' DynamicCache lets rows leave (`batch_select_indices`, public) but has no way for new rows to join a
cache that is already decoding. Here the joining rows' cache, prefilled on its own, is padded on the left to the
running cache's length (masked out, like the left padding of a prompt) and concatenated along the batch; columns
that every row has masked out are dropped from the left again, so a batch pays only for the longest live row.
The joining and trimming reach into DynamicLayer's `keys` / `values` tensors, (batch, heads, length, head_dim);
this module is the only place that does, and tests/sp_core/test_kv_cache.py fails if that layout changes.

Positions are unaffected: each row's position ids count its own real tokens, and RoPE is applied before keys are
cached, so padding or trimming columns moves no token.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

SEQUENCE_DIM = 2  # of a layer's (batch, heads, length, head_dim) keys and values


def cache_layers(cache: DynamicCache) -> list:
    """The cache's per-layer key/value holders, each with (batch, heads, length, head_dim) `keys` and `values`."""
    return list(cache.layers)


def join_rows(
    running: DynamicCache | None, running_mask: torch.Tensor | None, joining: DynamicCache, joining_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """`joining`'s rows appended after `running`'s; both padded on the left to the longer length. Returns the cache
    (running's, extended in place) and its (batch, length) attention mask."""
    if running is None or running_mask is None:
        return joining, joining_mask
    length = max(running_mask.shape[1], joining_mask.shape[1])
    for kept, new in zip(cache_layers(running), cache_layers(joining), strict=True):
        kept.keys = torch.cat([_pad_left(kept.keys, length), _pad_left(new.keys, length)], dim=0)
        kept.values = torch.cat([_pad_left(kept.values, length), _pad_left(new.values, length)], dim=0)
    mask = torch.cat([_pad_mask_left(running_mask, length), _pad_mask_left(joining_mask, length)], dim=0)
    return running, mask


def keep_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only `rows` (in that order) of the cache, in place; returns their mask."""
    index = torch.tensor(rows, device=mask.device)
    cache.batch_select_indices(index)
    return mask[index]


def trim_left(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that every row masks out (left by rows that have left); returns the mask."""
    live = mask.any(dim=0).nonzero()
    start = int(live[0]) if len(live) else mask.shape[1]
    if start == 0:
        return mask
    for layer in cache_layers(cache):
        layer.keys = layer.keys[:, :, start:].contiguous()
        layer.values = layer.values[:, :, start:].contiguous()
    return mask[:, start:]


def _pad_left(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[SEQUENCE_DIM]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[SEQUENCE_DIM] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=SEQUENCE_DIM)


def _pad_mask_left(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)

"""Pillow's bicubic resize of an RGB image, bit for bit, computing only the pixels of one crop.

CLIPImageProcessorPil (what transformers' CLIPImageProcessor runs without torchvision) and the official LLaVA-1.5 code
resize the whole image with `PIL.Image.resize(size, BICUBIC)` and then cut the centre crop out of it. Pillow resizes in
two one-axis passes with 22-bit fixed-point filter weights, rounding and clipping to uint8 after each pass. This module
repeats that arithmetic exactly, but only for the output pixels inside the crop, and does each pass as a few float32
matrix products (a band of weights per block of output pixels) instead of Pillow's scalar loops.

Exactness: the weights are Pillow's integers scaled by 2**-22, which float32 holds exactly, and the inputs of each pass
are integers 0..255, so a product's only error is float32 rounding, with a strict bound (`axis_plan`). Where the
estimate is farther than that from a rounding boundary, its floor is Pillow's value; the few that are closer (about
0.2% on photos, mostly exact .5 ties between neighbouring levels) are recomputed in int64 the way Pillow does. Tests
compare against `PIL.Image.resize` on random sizes and crops.

Pure numpy (no PIL, no torch): the caller hands in the image's pixels as an (H, W, C) uint8 array.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

import numpy as np

# Pillow's fixed point: 32 bits minus 8 for the pixel and 2 for the overshoot of a filter with negative lobes.
PRECISION_BITS = 22
# Pillow's bicubic kernel: Keys' cubic convolution with a = -0.5, support 2 (in output pixels when downscaling).
BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0
# Output pixels per matrix product. Each product reads the input band under its block; wider blocks waste more
# multiplications on zero weights, narrower ones make more, smaller products (16 was fastest for 640x480 -> 336).
BLOCK = 16
_FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def bicubic_kernel(x: np.ndarray) -> np.ndarray:
    """Pillow's `bicubic_filter`, with its operations in its order (float64, so the weights round the same)."""
    x = np.abs(x)
    near = ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * BICUBIC_A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@dataclass(frozen=True)
class PillowWeights:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output pixel, its first input pixel,
    its tap count and its fixed-point weights (zero past the tap count)."""

    first: np.ndarray  # (out,) int64
    count: np.ndarray  # (out,) int64
    fixed: np.ndarray  # (out, ksize) int64, weights * 2**22 rounded half away from zero


@lru_cache(maxsize=256)
def pillow_weights(in_size: int, out_size: int) -> PillowWeights:
    """The weights Pillow uses to resize an axis of `in_size` pixels to `out_size` (box = the whole axis)."""
    # Pillow computes the scale from the float32 box (0, in_size): exact for any size below 2**24.
    scale = float(in_size) / out_size
    filter_scale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filter_scale
    ksize = math.ceil(support) * 2 + 1
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # C's (int) cast truncates toward zero; the clamp at 0 makes that floor wherever it matters.
    first = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(ksize)
    used = taps[None, :] < count[:, None]
    weights = np.where(used, bicubic_kernel((taps[None, :] + first[:, None] - centre[:, None] + 0.5) / filter_scale), 0.0)
    # Sum left to right as Pillow does (numpy's pairwise sum would round differently).
    total = np.zeros(out_size)
    for tap in range(ksize):
        total = total + weights[:, tap]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    one = float(1 << PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + weights * one), np.trunc(0.5 + weights * one)).astype(np.int64)
    return PillowWeights(first=first, count=count, fixed=np.where(used, fixed, 0))


@dataclass(frozen=True)
class BandBlock:
    """One matrix product of a pass: the (in, out) float32 weight band, mapping inputs from `in_start` (relative to
    the plan's `in_start`) to outputs from `out_start`."""

    out_start: int
    in_start: int
    weights: np.ndarray

    @property
    def out_stop(self) -> int:
        return self.out_start + self.weights.shape[1]

    @property
    def in_stop(self) -> int:
        return self.in_start + self.weights.shape[0]


@dataclass(frozen=True)
class AxisPlan:
    """How to compute outputs [out_start, out_stop) of one axis: the input range they read, the blocks, the exact
    taps for recomputing a value, and how estimates are rounded (see `_round_like_pillow`)."""

    in_start: int
    in_stop: int
    blocks: tuple[BandBlock, ...]
    taps: np.ndarray  # (n_out, ksize) int64 input index relative to in_start (clamped; its weight is 0 there)
    fixed: np.ndarray  # (n_out, ksize) int64 Pillow weights
    bias: np.float32  # added to every product: 0.5 (Pillow's rounding) plus at least the largest float32 error
    unsure_below: float  # an estimate whose fraction is under this is recomputed exactly


@lru_cache(maxsize=256)
def axis_plan(in_size: int, out_size: int, out_start: int, out_stop: int) -> AxisPlan:
    """The plan for outputs [out_start, out_stop) of an `in_size` -> `out_size` resize."""
    weights = pillow_weights(in_size, out_size)
    first = weights.first[out_start:out_stop]
    count = weights.count[out_start:out_stop]
    fixed = weights.fixed[out_start:out_stop]
    in_start, in_stop = int(first.min()), int((first + count).max())
    # All bands at once (a new image size costs a new plan, so this runs per image on varied data): block b holds
    # outputs [b * BLOCK, (b + 1) * BLOCK) and reads inputs [band_start[b], band_stop[b]).
    n_out, ksize = fixed.shape
    block_starts = np.arange(0, n_out, BLOCK)
    band_start = np.minimum.reduceat(first, block_starts)
    band_stop = np.maximum.reduceat(first + count, block_starts)
    bands = np.zeros((len(block_starts), int((band_stop - band_start).max()), BLOCK), dtype=np.float32)
    out, tap = np.nonzero(np.arange(ksize)[None, :] < count[:, None])
    block = out // BLOCK
    bands[block, first[out] - band_start[block] + tap, out % BLOCK] = fixed[out, tap] * 2.0**-PRECISION_BITS
    blocks = tuple(
        BandBlock(
            int(start),
            int(band_start[index]) - in_start,
            np.ascontiguousarray(bands[index, : band_stop[index] - band_start[index], : min(BLOCK, n_out - start)]),
        )
        for index, start in enumerate(block_starts)
    )
    taps = np.minimum(first[:, None] + np.arange(ksize)[None, :], in_stop - 1) - in_start
    # A sum of n float32 products is off by at most gamma_n * sum |terms|, in any order of summation (Higham, Accuracy
    # and Stability of Numerical Algorithms, 3.1); zero weights add no error. The terms are ksize products of inputs
    # at most 255, plus the bias (0.5 + margin, under 1) added after the product, and one more rounding for that add.
    terms = ksize + 2
    gamma = terms * _FLOAT32_UNIT_ROUNDOFF / (1 - terms * _FLOAT32_UNIT_ROUNDOFF)
    largest_sum = float(np.abs(fixed).sum(axis=1).max()) * 2.0**-PRECISION_BITS
    margin = gamma * (255.0 * largest_sum + 1.0)
    bias = np.float32(0.5 + margin)
    if float(bias) < 0.5 + margin:  # the float32 bias must not fall short of 0.5 + margin
        bias = np.nextafter(bias, np.float32(1.0))
    # estimate = true + bias + error, |error| <= margin: its floor is Pillow's value unless its fraction is below
    # (bias - 0.5) + margin, where an error of up to margin may have carried it past an integer.
    unsure_below = float(bias) - 0.5 + margin
    return AxisPlan(in_start, in_stop, blocks, taps, np.ascontiguousarray(fixed), bias, unsure_below)


def pillow_runs_horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Pillow's pass order. Since Pillow 13 it runs the vertical pass first when the height shrinks by more than twice
    as many pixels as the width (`ImagingResampleInner`); earlier versions always run the horizontal pass first."""
    (in_width, in_height), (out_width, out_height) = in_size, out_size
    if _PILLOW_MAJOR < 13:
        return True
    shrink_height, shrink_width = in_height - out_height, in_width - out_width
    return not (shrink_height > 0 and shrink_height > shrink_width * 2)


def _pillow_major() -> int:
    try:
        return int(version("pillow").split(".")[0])
    except PackageNotFoundError:  # Pillow installed without metadata: assume the newest behaviour
        return 13


_PILLOW_MAJOR = _pillow_major()


class _Workspace(threading.local):
    """Per-thread flat buffers that only grow. The passes' temporaries are megabytes each; allocating them per image
    makes glibc map and fault in fresh pages every call (its heap is trimmed back after each free of that size), which
    costs more than the arithmetic."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, str], np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        size = math.prod(shape)
        key = (name, np.dtype(dtype).str)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, dtype=dtype)
            self.buffers[key] = buffer
        return buffer[:size].reshape(shape)


_WORKSPACE = _Workspace()


def pillow_resize_crop(
    pixels: np.ndarray,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pillow's `resize(size, BICUBIC)` of an image, cropped to `box`, bit for bit, computing only the crop.

    pixels: the image as (H, W, C) uint8 with any strides (e.g. a view of Pillow's own RGBX memory); size: (W', H') of
    the whole resized image; box: (left, top, w, h) inside it. Returns the crop as (C, h, w) float32 holding the uint8
    values, written into `out` when given (any (C, h, w) float32 array or view, e.g. one image of a batch).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise ValueError(f"pixels must be an (H, W, C) uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    out_width, out_height = size
    left, top, crop_width, crop_height = box
    if not (0 <= left and left + crop_width <= out_width and 0 <= top and top + crop_height <= out_height):
        raise ValueError(f"crop box {box} is not inside the resized size {size}")
    if out is None:
        out = np.empty((channels, crop_height, crop_width), dtype=np.float32)
    horizontal = axis_plan(width, out_width, left, left + crop_width) if out_width != width else None
    vertical = axis_plan(height, out_height, top, top + crop_height) if out_height != height else None
    rows = (vertical.in_start, vertical.in_stop) if vertical else (top, top + crop_height)
    cols = (horizontal.in_start, horizontal.in_stop) if horizontal else (left, left + crop_width)
    current = _planar_float(pixels[rows[0] : rows[1], cols[0] : cols[1]])
    passes = [(_horizontal_pass, horizontal), (_vertical_pass, vertical)]
    if not pillow_runs_horizontal_first((width, height), size):
        passes.reverse()
    passes = [(run, plan) for run, plan in passes if plan is not None]
    if not passes:
        np.copyto(out, current)
        return out
    for index, (run, plan) in enumerate(passes):
        current = run(current, plan, out if index == len(passes) - 1 else None)
    return out


def _planar_float(region: np.ndarray) -> np.ndarray:
    """(R, K, C) uint8, any strides -> (C, R, K) float32 in the workspace. Planar, so that the horizontal pass is one
    product over the last axis for all rows of all channels. De-interleaving as bytes and then widening the contiguous
    planes is faster than widening while de-interleaving."""
    rows, cols, channels = region.shape
    planes = _WORKSPACE.take("planes_uint8", (channels, rows, cols), np.uint8)
    np.copyto(planes, region.transpose(2, 0, 1))
    widened = _WORKSPACE.take("planes", (channels, rows, cols))
    np.copyto(widened, planes, casting="unsafe")  # uint8 -> float32, exact
    return widened


# The products use numpy's matmul (its BLAS): for these small products (K about 30) its per-call cost is well under
# half of torch.addmm's here, and it has no reduced-precision float32 mode that would void the error bound.


def _horizontal_pass(planes: np.ndarray, plan: AxisPlan, out: np.ndarray | None) -> np.ndarray:
    """(C, R, cols) -> (C, R, n_out), resampling along the last axis."""
    channels, rows, _ = planes.shape
    n_out = plan.taps.shape[0]
    source = planes.reshape(channels * rows, -1)
    estimate = _WORKSPACE.take("estimate", (channels * rows, n_out))
    for block in plan.blocks:
        np.matmul(source[:, block.in_start : block.in_stop], block.weights,
                  out=estimate[:, block.out_start : block.out_stop])

    def exact(flat_index: np.ndarray) -> np.ndarray:
        row, column = np.divmod(flat_index, n_out)
        return _fixed_point_sum(source[row[:, None], plan.taps[column]], plan.fixed[column])

    rounded = out if out is not None else _WORKSPACE.take("rounded_h", (channels, rows, n_out))
    return _round_like_pillow(estimate.reshape(channels, rows, n_out), plan, exact, rounded)


def _vertical_pass(planes: np.ndarray, plan: AxisPlan, out: np.ndarray | None) -> np.ndarray:
    """(C, rows, N) -> (C, n_out, N), resampling along the middle axis."""
    channels, _, columns = planes.shape
    n_out = plan.taps.shape[0]
    estimate = _WORKSPACE.take("estimate", (channels, n_out, columns))
    for block in plan.blocks:
        np.matmul(block.weights.T, planes[:, block.in_start : block.in_stop, :],
                  out=estimate[:, block.out_start : block.out_stop, :])

    def exact(flat_index: np.ndarray) -> np.ndarray:
        channel, rest = np.divmod(flat_index, n_out * columns)
        row, column = np.divmod(rest, columns)
        return _fixed_point_sum(planes[channel[:, None], plan.taps[row], column[:, None]], plan.fixed[row])

    rounded = out if out is not None else _WORKSPACE.take("rounded_v", (channels, n_out, columns))
    return _round_like_pillow(estimate, plan, exact, rounded)


def _fixed_point_sum(values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Pillow's inner loop for a few output values: (n, ksize) inputs and weights -> (n,) clipped uint8 as float32."""
    total = (values.astype(np.int64) * fixed).sum(axis=1) + (1 << (PRECISION_BITS - 1))
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.float32)


def _round_like_pillow(
    estimate: np.ndarray, plan: AxisPlan, exact: Callable[[np.ndarray], np.ndarray], rounded: np.ndarray
) -> np.ndarray:
    """Pillow's (sum + 2**21) >> 22, clipped to 0..255, into `rounded`, from float32 estimates of sum / 2**22 within
    the bound `axis_plan` derived. `estimate` is scratch.

    With the bias added, the floor of an estimate is Pillow's value unless its fraction is under `plan.unsure_below`:
    those few are recomputed exactly. Clipping to [0.5, 255.5] first gives the clipped value with a fraction of .5,
    far from any boundary (an estimate below 0.5 means a true value below 0).
    """
    np.add(estimate, plan.bias, out=estimate)
    np.clip(estimate, 0.5, 255.5, out=estimate)
    np.floor(estimate, out=rounded)
    fraction = np.subtract(estimate, rounded, out=estimate)
    unsure_mask = _WORKSPACE.take("unsure", fraction.shape, np.bool_)
    unsure = np.flatnonzero(np.less(fraction, plan.unsure_below, out=unsure_mask))
    if unsure.size:
        # `rounded` may be any view (e.g. `out`): index it by coordinates, not flat positions.
        rounded[np.unravel_index(unsure, rounded.shape)] = exact(unsure)
    return rounded

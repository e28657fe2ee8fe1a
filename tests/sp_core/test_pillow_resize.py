"""sp_core.pillow_resize: bit-for-bit equality with the installed Pillow's `resize(size, BICUBIC)` on random sizes and
crops, both pass orders, the exact-recompute path, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sp_core.pillow_resize import (
    pillow_resize_crop,
    pillow_runs_horizontal_first,
    pillow_weights,
)


def _image(width: int, height: int, rng: np.random.Generator, smooth: bool) -> np.ndarray:
    """(H, W, 3) uint8: pure noise, or smooth fields (flat areas and soft edges give exact .5 ties to round)."""
    if not smooth:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    coarse = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def _ours(pixels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    crop = pillow_resize_crop(pixels, size, box)
    assert crop.dtype == np.float32 and crop.shape == (3, box[3], box[2])
    np.testing.assert_array_equal(crop, crop.round())  # uint8 values held in float32
    return crop.transpose(1, 2, 0).astype(np.uint8)


def _rgbx(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8: the pixels with a fourth byte of 255, as Pillow stores RGB."""
    return np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], axis=2)


def _pillow(pixels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, width, height = box
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))[top : top + height,
                                                                                      left : left + width]


def test_random_sizes_and_crops_equal_pillow_bit_for_bit():
    rng = np.random.default_rng(2026)
    orders = set()
    for case in range(80):
        width, height = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        out_width, out_height = int(rng.integers(1, 500)), int(rng.integers(1, 500))
        if case % 5 == 0:
            out_width = width  # only a vertical pass
        if case % 7 == 0:
            out_height = height  # only a horizontal pass
        crop_width, crop_height = int(rng.integers(1, out_width + 1)), int(rng.integers(1, out_height + 1))
        box = (int(rng.integers(0, out_width - crop_width + 1)), int(rng.integers(0, out_height - crop_height + 1)),
               crop_width, crop_height)
        pixels = _image(width, height, rng, smooth=case % 2 == 1)
        if case % 3 == 0:  # as Pillow's own memory is handed over: RGB inside 4 bytes per pixel
            pixels = _rgbx(pixels)[..., :3]
        orders.add(pillow_runs_horizontal_first((width, height), (out_width, out_height)))

        np.testing.assert_array_equal(_ours(pixels, (out_width, out_height), box),
                                      _pillow(pixels, (out_width, out_height), box),
                                      err_msg=f"{width}x{height} -> {out_width}x{out_height}, crop {box}")
    assert orders == {True, False}  # both of Pillow's pass orders were exercised


@pytest.mark.parametrize("size, resized, box", [
    ((640, 480), (448, 336), (56, 0, 336, 336)),  # CLIP's shortest edge + centre crop
    ((480, 640), (336, 448), (0, 56, 336, 336)),
    ((640, 640), (336, 336), (0, 0, 336, 336)),  # LLaVA's padded square
    ((100, 80), (420, 336), (42, 0, 336, 336)),  # upscaling
    ((400, 1400), (336, 1176), (0, 420, 336, 336)),  # height shrinks 3x more than width: vertical pass first
    ((3000, 2000), (504, 336), (84, 0, 336, 336)),  # 6x downscale, 25-tap filter
])
def test_the_clip_geometries_equal_pillow(size, resized, box):
    pixels = _image(*size, np.random.default_rng(sum(size)), smooth=True)
    np.testing.assert_array_equal(_ours(pixels, resized, box), _pillow(pixels, resized, box))


def test_pass_order_follows_the_installed_pillow():
    from importlib.metadata import version

    vertical_first = not pillow_runs_horizontal_first((400, 1400), (336, 1176))
    assert vertical_first == (int(version("pillow").split(".")[0]) >= 13)
    assert pillow_runs_horizontal_first((640, 480), (448, 336))


def test_exact_ties_are_recomputed_and_rounded_half_up_like_pillow(monkeypatch):
    # Columns alternating 10, 11, halved: away from the edges every output is exactly 10.5 before rounding, which a
    # float32 estimate cannot decide; Pillow rounds it up.
    from sp_core import pillow_resize

    recomputed = []
    original = pillow_resize._fixed_point_sum
    monkeypatch.setattr(pillow_resize, "_fixed_point_sum",
                        lambda values, fixed: recomputed.append(len(values)) or original(values, fixed))
    pixels = np.tile(np.array([10, 11], dtype=np.uint8)[None, :, None], (16, 32, 3))  # (16, 64, 3)

    ours = _ours(pixels, (32, 16), (0, 0, 32, 16))

    np.testing.assert_array_equal(ours, _pillow(pixels, (32, 16), (0, 0, 32, 16)))
    assert sum(recomputed) >= 16 * 28 * 3  # every interior output went through the exact path
    assert (ours[:, 2:-2] == 11).all()


def test_weights_are_pillows_fixed_point_ones():
    weights = pillow_weights(640, 448)
    assert weights.fixed.shape == (448, 7)  # ceil(2 * 640/448) * 2 + 1 taps
    # Each row's weights sum to 1.0 in 22-bit fixed point, up to the rounding of each weight.
    assert np.abs(weights.fixed.sum(axis=1) - (1 << 22)).max() <= 7
    assert (weights.first >= 0).all() and (weights.first + weights.count <= 640).all()


def test_exact_where_torch_allows_reduced_precision_matmuls():
    # The bound on the float32 error assumes IEEE products: a process that let torch use TF32 or bf16 passes must
    # still get Pillow's values (the products are numpy's, which has no such mode), and keeps its setting.
    pixels = _image(300, 200, np.random.default_rng(0), smooth=True)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        ours = _ours(pixels, (210, 140), (0, 0, 210, 140))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    np.testing.assert_array_equal(ours, _pillow(pixels, (210, 140), (0, 0, 210, 140)))


def test_writes_into_a_given_view_of_a_batch():
    rng = np.random.default_rng(1)
    images = [_image(320, 240, rng, smooth=True), _image(200, 300, rng, smooth=False)]
    batch = torch.full((2, 3, 64, 64), -1.0)
    for index, pixels in enumerate(images):
        returned = pillow_resize_crop(pixels, (64, 64), (0, 0, 64, 64), out=batch[index].numpy())
        assert np.shares_memory(returned, batch[index].numpy())
    for index, pixels in enumerate(images):
        expected = _pillow(pixels, (64, 64), (0, 0, 64, 64)).transpose(2, 0, 1)
        np.testing.assert_array_equal(batch[index].to(torch.uint8).numpy(), expected)


def test_refuses_a_crop_outside_the_resized_image_and_pixels_not_hwc_uint8():
    pixels = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"crop box \(0, 0, 6, 5\) is not inside the resized size \(5, 5\)"):
        pillow_resize_crop(pixels, (5, 5), (0, 0, 6, 5))
    with pytest.raises(ValueError, match=r"pixels must be an \(H, W, C\) uint8 array, got float32"):
        pillow_resize_crop(pixels.astype(np.float32), (5, 5), (0, 0, 5, 5))
    with pytest.raises(ValueError, match=r"pixels must be .* got uint8 \(10, 10\)"):
        pillow_resize_crop(pixels[..., 0], (5, 5), (0, 0, 5, 5))

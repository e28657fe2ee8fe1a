"""sp_core.image_processing: parity with transformers' CLIP preprocessing (both backends) and with LLaVA's geometry.
Every image is built in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sp_core import processing
from sp_core.image_processing import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    LlavaSPImageProcessor,
    expand_to_square,
    shortest_edge_size,
)
from tests.sp_core.image_helpers import photo_image
from tests.sp_core.make_clip_torchvision_reference import CASES as REFERENCE_CASES
from tests.sp_core.make_clip_torchvision_reference import IMAGE_SIZE as REFERENCE_SIZE
from tests.sp_core.make_clip_torchvision_reference import OUTPUT as REFERENCE_FILE
from tests.sp_core.make_clip_torchvision_reference import photo_like

SIZE = 336
MEAN = np.array(CLIP_IMAGE_MEAN, dtype=np.float64).reshape(3, 1, 1)
STD = np.array(CLIP_IMAGE_STD, dtype=np.float64).reshape(3, 1, 1)


@pytest.fixture(scope="module")
def hf_processor():
    return processing.clip_image_processor(SIZE)


def _hf_pixels(hf_processor, image: Image.Image) -> torch.Tensor:
    return hf_processor(image, return_tensors="pt").pixel_values[0]  # (3, S, S)


def _hf_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Undo CLIP's rescale + normalise: (3, S, S) float -> (S, S, 3) uint8, exact since the inputs were integers."""
    return np.rint((pixels.double().numpy() * STD + MEAN) * 255).astype(np.uint8).transpose(1, 2, 0)


# ----------------------------------------------------------------------------------------------------------------
# Parity with transformers' default CLIPImageProcessor (torchvision backend), from stored outputs


@pytest.fixture(scope="module")
def torchvision_reference() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(REFERENCE_FILE)


def test_the_default_resize_is_pillows_like_clip_image_processor_pil_and_llava():
    assert LlavaSPImageProcessor().resize == "pil"
    with pytest.raises(ValueError, match=r"resize must be one of \['torch', 'pil'\], got 'cv2'"):
        LlavaSPImageProcessor(resize="cv2")


@pytest.mark.parametrize("aspect", ["square", "pad"])
@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_torch_resize_matches_clip_image_processor_bit_for_bit(torchvision_reference, aspect, case):
    image = Image.fromarray(torchvision_reference[f"input/{case}"].numpy())
    assert image.size == REFERENCE_CASES[case]
    expected = torchvision_reference[f"expected/{aspect}/{case}"].numpy()
    ours = LlavaSPImageProcessor(image_size=REFERENCE_SIZE, aspect=aspect, resize="torch")

    np.testing.assert_array_equal(ours.to_uint8(image), expected)
    expected_pixels = (torch.from_numpy(expected).permute(2, 0, 1).double() / 255 - torch.from_numpy(MEAN)) / (
        torch.from_numpy(STD))
    assert (ours([image])[0].double() - expected_pixels).abs().max().item() < 1e-5


def test_the_two_resizes_differ_by_at_most_two_levels_on_under_one_percent_of_pixels():
    image = photo_image(640, 480, seed=5)
    torch_crop = LlavaSPImageProcessor(image_size=SIZE, resize="torch").to_uint8(image).astype(np.int16)
    pil_crop = LlavaSPImageProcessor(image_size=SIZE, resize="pil").to_uint8(image).astype(np.int16)

    difference = np.abs(torch_crop - pil_crop)
    assert 0 < difference.max() <= 2
    assert 0 < (difference > 0).mean() < 0.01


# ----------------------------------------------------------------------------------------------------------------
# Parity with CLIPImageProcessorPil (resize="pil")


@pytest.mark.parametrize("width, height", [(640, 480), (300, 500), (100, 80), (337, 1001), (336, 336)])
def test_square_mode_matches_clip_image_processor_pil(hf_processor, width, height):
    image = photo_image(width, height, seed=width + height)
    ours = LlavaSPImageProcessor(image_size=SIZE, aspect="square", resize="pil")

    expected = _hf_pixels(hf_processor, image)
    actual = ours([image])[0]

    assert actual.shape == expected.shape == (3, SIZE, SIZE)
    assert actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() <= 1e-2
    # Same resize and crop: the uint8 crops are bit-identical, the float gap is only float32 rounding.
    np.testing.assert_array_equal(ours.to_uint8(image), _hf_uint8(expected))
    assert (actual - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("resize", ["pil", "torch"])
def test_call_on_a_batch_equals_clip_image_processor_and_normalize(hf_processor, resize):
    images = [photo_image(width, height, seed=index) for index, (width, height) in
              enumerate([(640, 480), (300, 500), (336, 336), (100, 80)])]
    ours = LlavaSPImageProcessor(image_size=SIZE, aspect="square", resize=resize)

    actual = ours(images)
    expected = hf_processor(images, return_tensors="pt").pixel_values

    assert actual.shape == expected.shape == (4, 3, SIZE, SIZE) and actual.dtype == torch.float32
    assert actual.is_contiguous()
    # Bit-identical crops with "pil"; "torch" is one or two levels (0.015 each) off on a few pixels.
    assert (actual - expected).abs().max().item() < (1e-5 if resize == "pil" else 0.031)
    # Bit-identical to the shard path: uint8 crops stored, normalised at train time.
    assert torch.equal(actual, ours.normalize(np.stack([ours.to_uint8(image) for image in images])))
    assert ours([]).shape == (0, 3, SIZE, SIZE)


@pytest.mark.parametrize("width, height", [(640, 480), (300, 500)])
def test_pad_mode_equals_clip_on_the_expand2square_image(hf_processor, width, height):
    image = photo_image(width, height, seed=1)
    ours = LlavaSPImageProcessor(image_size=SIZE, aspect="pad", resize="pil")
    assert ours.pad_fill == (122, 116, 104)

    expected = _hf_pixels(hf_processor, expand_to_square(image, (122, 116, 104)))
    actual = ours([image])[0]

    assert (actual - expected).abs().max().item() <= 1e-2
    np.testing.assert_array_equal(ours.to_uint8(image), _hf_uint8(expected))


def test_pad_mode_fills_the_band_with_the_mean_colour():
    crop = LlavaSPImageProcessor(image_size=SIZE, aspect="pad").to_uint8(photo_image(640, 480))
    # (640 - 480) / 2 = 80 source rows of fill above the content -> 42 rows at 336/640; the top 40 are pure fill.
    np.testing.assert_array_equal(crop[:40], np.broadcast_to([122, 116, 104], (40, SIZE, 3)))
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8 and crop.flags.c_contiguous


def test_expand_to_square_geometry_matches_llava():
    wide = Image.new("RGB", (4, 2), (255, 255, 255))
    square = expand_to_square(wide, (1, 2, 3))
    pixels = np.asarray(square)
    assert square.size == (4, 4)
    np.testing.assert_array_equal(pixels[1:3], 255)  # content rows 1..2
    np.testing.assert_array_equal(pixels[[0, 3]], np.broadcast_to([1, 2, 3], (2, 4, 3)))

    tall = np.asarray(expand_to_square(Image.new("RGB", (1, 4), (255, 255, 255)), (0, 0, 0)))
    assert tall.shape == (4, 4, 3)
    # Slack 3 -> left offset 3 // 2 = 1, as LLaVA pastes at ((h - w) // 2, 0).
    np.testing.assert_array_equal(tall[:, :, 0].max(axis=0), [0, 255, 0, 0])

    already_square = Image.new("RGB", (3, 3))
    assert expand_to_square(already_square, (0, 0, 0)) is already_square


def test_shortest_edge_size_truncates_like_transformers():
    assert shortest_edge_size(640, 480, 336) == (448, 336)
    assert shortest_edge_size(300, 500, 336) == (336, 560)
    assert shortest_edge_size(337, 1001, 336) == (336, 998)  # 336 * 1001 / 337 = 998.0059 -> 998
    assert shortest_edge_size(100, 80, 336) == (420, 336)


def test_normalize_maps_black_and_white_to_clip_values():
    ours = LlavaSPImageProcessor(image_size=2, aspect="square")
    crops = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    crops[1] = 255

    pixels = ours.normalize(crops)

    assert pixels.shape == (2, 3, 2, 2) and pixels.dtype == torch.float32 and pixels.is_contiguous()
    black = -np.array(CLIP_IMAGE_MEAN) / np.array(CLIP_IMAGE_STD)
    white = (1 - np.array(CLIP_IMAGE_MEAN)) / np.array(CLIP_IMAGE_STD)
    np.testing.assert_allclose(pixels[0, :, 0, 0].numpy(), black, atol=1e-6)  # (-1.7923, -1.7521, -1.4802)
    np.testing.assert_allclose(pixels[1, :, 1, 1].numpy(), white, atol=1e-6)  # (1.9303, 2.0749, 2.1459)
    torch.testing.assert_close(ours.normalize(torch.from_numpy(crops)), pixels)


def test_normalize_rejects_float_or_channels_first_input():
    ours = LlavaSPImageProcessor(image_size=4)
    with pytest.raises(ValueError, match=r"uint8 crops shaped \(N, S, S, 3\), got torch.float32"):
        ours.normalize(np.zeros((1, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got torch.uint8 \(1, 3, 4, 4\)"):
        ours.normalize(np.zeros((1, 3, 4, 4), dtype=np.uint8))


def test_bad_aspect_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"aspect must be one of \['pad', 'square'\], got 'anyres'"):
        LlavaSPImageProcessor(aspect="anyres")


def test_processor_validation_collects_every_problem():
    with pytest.raises(ValueError) as error:
        LlavaSPImageProcessor(image_size=0, image_std=(0.2, 0.0, 0.3))
    assert "image_size must be a positive int, got 0" in str(error.value)
    assert "image_std must be positive, got (0.2, 0.0, 0.3)" in str(error.value)


# ----------------------------------------------------------------------------------------------------------------
# Following a saved CLIP processor


def test_from_pretrained_dir_reads_preprocessor_config(tmp_path):
    hf = processing.clip_image_processor(224)
    hf.image_mean = [0.5, 0.5, 0.5]
    hf.save_pretrained(tmp_path)

    ours = LlavaSPImageProcessor.from_pretrained_dir(tmp_path, aspect="square")

    assert (ours.image_size, ours.image_mean, ours.image_std, ours.aspect) == (224, (0.5,) * 3, CLIP_IMAGE_STD, "square")
    assert ours.pad_fill == (127, 127, 127)


def test_from_pretrained_dir_reads_nested_processor_config(tmp_path):
    config = processing.clip_image_processor(112).to_dict()
    nested = {"processor_class": "LlavaProcessor", "image_processor": config}
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    assert LlavaSPImageProcessor.from_pretrained_dir(tmp_path).image_size == 112


def test_from_pretrained_dir_without_config_says_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        LlavaSPImageProcessor.from_pretrained_dir(tmp_path)


def test_from_clip_processor_follows_size_and_refuses_a_squashing_resize():
    assert LlavaSPImageProcessor.from_clip_processor(processing.clip_image_processor(448)).image_size == 448

    squash = processing.clip_image_processor(336)
    config = squash.to_dict() | {"size": {"height": 336, "width": 336}, "resample": 2}
    with pytest.raises(ValueError) as error:
        LlavaSPImageProcessor.from_config_dict(config)
    assert "size must be {'shortest_edge': N}" in str(error.value)
    assert "resample must be 3 (bicubic), got 2" in str(error.value)


@pytest.mark.parametrize("resize", ["pil", "torch"])
def test_siglips_uncropped_resize_is_followed(resize):
    """SiglipImageProcessor resizes both sides to {height, width} and crops nothing."""
    from transformers import SiglipImageProcessorPil

    hf_processor = SiglipImageProcessorPil(size={"height": 64, "width": 64})
    ours = LlavaSPImageProcessor.from_clip_processor(hf_processor, aspect="square", resize=resize)
    assert (ours.fit, ours.image_size, ours.image_mean, ours.image_std) == ("squash", 64, (0.5,) * 3, (0.5,) * 3)
    image = Image.fromarray(photo_like(90, 50, seed=4))
    expected = hf_processor(image, return_tensors="pt").pixel_values
    tolerance = 1e-6 if resize == "pil" else 2.5 / 255 / 0.5  # "torch" is torchvision's bicubic: 1-2 levels off
    torch.testing.assert_close(ours([image]).contiguous(), expected, atol=tolerance, rtol=0)


def test_a_squashing_resize_to_a_rectangle_is_refused():
    config = {"size": {"height": 64, "width": 48}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_normalize": False}
    with pytest.raises(ValueError) as error:
        LlavaSPImageProcessor.from_config_dict(config)
    assert "size must be a square {'height': N, 'width': N}" in str(error.value)
    assert "do_normalize must be true, got False" in str(error.value)


def test_processor_converts_non_rgb_inputs_itself():
    ours = LlavaSPImageProcessor(image_size=8, aspect="square")
    grey = Image.new("L", (16, 8), 90)
    np.testing.assert_array_equal(ours.to_uint8(grey), np.full((8, 8, 3), 90, dtype=np.uint8))

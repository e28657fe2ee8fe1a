"""sp_core.image_decoding: the default equals the official LLaVA loader on awkward files (restated in
tests.sp_core.official_loader), "display" shows the image as a viewer does, and one test per bad-image reason.
Every image is built by Pillow, in memory or in tmp_path."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from sp_core import processing
from sp_core.image_decoding import (
    ImageError,
    ImageTooLargeError,
    load_rgb_image,
    to_rgb,
)
from sp_core.image_processing import LlavaSPImageProcessor
from tests.sp_core.image_helpers import encode_as, photo_image
from tests.sp_core.make_clip_torchvision_reference import photo_like
from tests.sp_core.official_loader import official_open, official_pixel_values

# The official loader's convert("RGB") of a palette with per-entry transparency makes Pillow suggest RGBA.
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (8-bit RGB) but carries 16 bytes of pixel data: costs nothing to write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))


# ----------------------------------------------------------------------------------------------------------------
# The default, "llava": the official loader's pixels


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode_as(photo_image(120, 80, seed=1), "JPEG", quality=92, exif=exif)


def _rgba_png() -> bytes:
    pixels = np.dstack([photo_like(90, 60, seed=2), np.tile(np.linspace(0, 255, 90, dtype=np.uint8), (60, 1))])
    return encode_as(Image.fromarray(pixels), "PNG")


def _sixteen_bit_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (40, 1))
    return encode_as(Image.fromarray(ramp), "PNG")


def _palette_transparency_png() -> bytes:
    image = Image.fromarray(photo_like(50, 70, seed=3)).quantize(16)
    image.info["transparency"] = bytes([0] * 4 + [255] * 12)
    return encode_as(image, "PNG", transparency=image.info["transparency"])


def _la_png() -> bytes:
    grey = photo_like(40, 40, seed=4)[:, :, 0]
    return encode_as(Image.fromarray(np.dstack([grey, grey[::-1]])), "PNG")


def _cmyk_jpeg() -> bytes:
    return encode_as(photo_image(64, 48, seed=5).convert("CMYK"), "JPEG", quality=90)


def _animated_gif() -> bytes:
    frames = [photo_image(48, 32, seed=seed).quantize(64) for seed in (6, 7)]
    return encode_as(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _webp_with_alpha() -> bytes:
    return encode_as(Image.open(io.BytesIO(_rgba_png())), "WEBP", lossless=True)


AWKWARD_FILES = {
    "exif_rotated.jpg": _rotated_jpeg, "rgba.png": _rgba_png, "16bit.png": _sixteen_bit_png,
    "palette_transparency.png": _palette_transparency_png, "la.png": _la_png, "cmyk.jpg": _cmyk_jpeg,
    "animated.gif": _animated_gif, "alpha.webp": _webp_with_alpha,
}


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("awkward")
    paths = {}
    for name, make in AWKWARD_FILES.items():
        (folder / name).write_bytes(make())
        paths[name] = str(folder / name)
    return paths


@pytest.mark.parametrize("name", list(AWKWARD_FILES))
def test_the_default_decoding_equals_the_official_loader(awkward_files, name):
    path = awkward_files[name]
    expected = np.asarray(official_open(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the palette-transparency hint Pillow gives is not the user's business
        from_path = np.asarray(load_rgb_image(path))
        with open(path, "rb") as file:
            from_bytes = np.asarray(load_rgb_image(file.read()))
    np.testing.assert_array_equal(from_path, expected)
    np.testing.assert_array_equal(from_bytes, expected)


@pytest.mark.parametrize("name", list(AWKWARD_FILES))
def test_default_pixel_values_equal_the_official_training_input(awkward_files, name):
    hf_processor = processing.clip_image_processor(64)
    ours = LlavaSPImageProcessor(image_size=64)  # the defaults: pad, Pillow's resize, llava decoding
    actual = ours([load_rgb_image(awkward_files[name])])[0]
    expected = official_pixel_values(awkward_files[name], hf_processor)
    assert (actual - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("name, least_difference", [("exif_rotated.jpg", 100), ("rgba.png", 100),
                                                    ("16bit.png", 200), ("palette_transparency.png", 50)])
def test_display_decoding_differs_where_a_viewer_differs(awkward_files, name, least_difference):
    official = np.asarray(official_open(awkward_files[name])).astype(np.int16)
    display = np.asarray(load_rgb_image(awkward_files[name], decoding="display")).astype(np.int16)
    if official.shape != display.shape:  # EXIF orientation 6 swaps the sides
        assert official.shape == display.shape[1::-1] + (3,)
        return
    assert np.abs(official - display).max() >= least_difference


def test_an_unknown_decoding_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"image_decoding='viewer'; allowed: llava, display"):
        load_rgb_image(_rgba_png(), decoding="viewer")


# ----------------------------------------------------------------------------------------------------------------
# decoding="display": as a viewer shows the image


def test_display_applies_exif_orientation_6():
    image = Image.new("RGB", (40, 20), (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 8, 8))  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"

    loaded = load_rgb_image(encode_as(image, "JPEG", quality=95, exif=exif), decoding="display")

    assert loaded.mode == "RGB" and loaded.size == (20, 40)
    red, green, _ = loaded.getpixel((16, 3))  # the marker is now in the top-right corner
    assert red > 200 and green < 60
    assert max(abs(value - 128) for value in loaded.getpixel((3, 3))) < 10


def test_display_turns_palette_transparency_white():
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red (transparent), index 1 blue
    image.paste(1, (2, 0, 4, 2))
    image.info["transparency"] = 0

    loaded = load_rgb_image(encode_as(image, "PNG"), decoding="display")

    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded)[0], [[255, 255, 255]] * 2 + [[0, 0, 255]] * 2)


def test_display_composites_rgba_onto_white():
    pixels = np.zeros((1, 3, 4), dtype=np.uint8)
    pixels[0, :, :3] = (10, 20, 30)
    pixels[0, :, 3] = (0, 255, 128)  # transparent, opaque, half

    loaded = load_rgb_image(encode_as(Image.fromarray(pixels), "PNG"), decoding="display")

    assert loaded.mode == "RGB"
    # Half alpha: 10 * 128/255 + 255 * 127/255 = 132.0 (and 137.0, 142.0 for G, B).
    np.testing.assert_allclose(np.asarray(loaded)[0], [[255, 255, 255], [10, 20, 30], [132, 137, 142]], atol=1)


def test_display_turns_la_l_and_1_into_grey_rgb():
    la = Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8))  # (1, 2, 2) -> mode LA
    assert la.mode == "LA"
    np.testing.assert_array_equal(np.asarray(load_rgb_image(encode_as(la, "PNG"), decoding="display"))[0], [[255] * 3, [50] * 3])

    grey = load_rgb_image(encode_as(Image.new("L", (2, 1), 77), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (77, 77, 77)

    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    np.testing.assert_array_equal(np.asarray(load_rgb_image(encode_as(bilevel, "PNG")))[0], [[0] * 3, [255] * 3])


def test_display_rescales_16_bit_greyscale_instead_of_clipping():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    encoded = encode_as(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(encoded)).mode == "I;16"

    loaded = load_rgb_image(encoded, decoding="display")

    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded)[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(np.asarray(loaded)[0, :, 1], np.asarray(loaded)[0, :, 2])


def test_display_reads_big_endian_16_bit_32_bit_and_float_modes():
    big_endian = Image.frombytes("I;16B", (3, 1), np.array([0, 32896, 65535], dtype=">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(big_endian))[0, :, 0], [0, 128, 255])

    int32 = Image.fromarray(np.array([[-5, 0, 65535, 70000]], dtype=np.int32))
    assert int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(int32))[0, :, 0], [0, 0, 255, 255])

    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit_float.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb(unit_float))[0, :, 0], [0, 128, 255])
    byte_float = Image.fromarray(np.array([[0.0, 100.4, 300.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(to_rgb(byte_float))[0, :, 0], [0, 100, 255])


def test_cmyk_and_ycbcr_become_rgb():
    cmyk = Image.new("CMYK", (2, 1), (0, 255, 255, 0))
    cmyk.putpixel((1, 0), (0, 0, 0, 255))
    loaded = load_rgb_image(encode_as(cmyk, "TIFF"))
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded)[0], [[255, 0, 0], [0, 0, 0]])

    ycbcr = to_rgb(Image.new("YCbCr", (1, 1), (200, 128, 128)))
    assert ycbcr.mode == "RGB"
    np.testing.assert_allclose(ycbcr.getpixel((0, 0)), (200, 200, 200), atol=1)


def test_load_accepts_paths(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (3, 2), (255, 0, 0)).save(path)
    for source in (path, str(path)):
        loaded = load_rgb_image(source)
        assert loaded.size == (3, 2) and loaded.getpixel((2, 1)) == (255, 0, 0)


# ----------------------------------------------------------------------------------------------------------------
# Bad images: one reason each


def test_garbage_bytes_are_undecodable():
    with pytest.raises(ImageError) as error:
        load_rgb_image(b"definitely not an image" * 10)
    assert error.value.reason == "image_undecodable"
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_file_cut_in_half_is_truncated(fmt):
    encoded = encode_as(photo_image(120, 80), fmt)
    with pytest.raises(ImageError, match="truncated") as error:
        load_rgb_image(encoded[: len(encoded) // 2])
    assert error.value.reason == "image_truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # no PIL global was flipped to get here


def test_too_many_pixels_is_too_large_with_sizes_in_the_message():
    with pytest.raises(ImageTooLargeError, match=r"64x64 = 4096 pixels, over max_pixels=1000") as error:
        load_rgb_image(encode_as(photo_image(64, 64), "JPEG"), max_pixels=1000)
    assert error.value.reason == "image_too_large"


def test_pixel_budget_is_checked_before_decoding():
    # The header says 1000x1000 but the pixel data is 16 bytes: decoding would fail as truncated, so getting
    # image_too_large proves the size check ran first.
    header_only = _png_header_only(1000, 1000)
    with pytest.raises(ImageError) as decoded:
        load_rgb_image(header_only)
    assert decoded.value.reason == "image_truncated"

    with pytest.raises(ImageError) as checked:
        load_rgb_image(header_only, max_pixels=999_999)
    assert checked.value.reason == "image_too_large"


@pytest.mark.parametrize("side", [10_000, 50_000])  # PIL warns over 89.5M pixels, raises over 179M
def test_pil_decompression_bomb_check_becomes_too_large(side):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out as a warning either
        with pytest.raises(ImageError, match="pixel limit") as error:
            load_rgb_image(_png_header_only(side, side), max_pixels=10**10)
    assert error.value.reason == "image_too_large"


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_rgb_image(tmp_path / "missing.jpg")

"""File bytes (or a path) -> one RGB PIL image, or an `ImageError` whose `reason` names the problem.

Two ways to turn a decoded image into RGB (`decoding=`):

- "llava" (the default): Pillow's `convert("RGB")`, which the official LLaVA-1.5 loader calls on every image
  (`Image.open(path).convert("RGB")`), so pixels equal those the released checkpoints were trained and evaluated
  on. The EXIF orientation tag is ignored, an alpha channel and palette transparency are dropped (the colour under
  a transparent pixel shows), 16-bit and 32-bit greyscale are clipped at 255 and float images truncated.
- "display": the image as a viewer shows it, better for new data: EXIF orientation applied, transparency
  composited onto white (as transformers' `convert_to_rgb`), 16-bit greyscale rescaled (0..65535 -> 0..255,
  rounded) and float images read as [0, 1] where they fit.

Either way the pixel budget is checked from the header before any pixel is decoded (decompression bombs), and a
truncated or corrupt file is an error, never a half-grey image (the official code sets
`ImageFile.LOAD_TRUNCATED_IMAGES`, which we deliberately do not). Pure PIL + numpy: imported inside data workers.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sp_core.image_options import (
    DEFAULT_DECODING,
    DEFAULT_MAX_PIXELS,
    IMAGE_DECODINGS,
    ImageDecoding,
    decoding_problem,
)


class ImageError(ValueError):
    """A data row's image cannot be used; `reason` is a stable machine-readable tag for quarantine tables."""

    reason: str = "image_error"


class ImageUndecodableError(ImageError):
    """Not an image PIL can read: garbage bytes, an unknown format, or a corrupt stream."""

    reason = "image_undecodable"


class ImageTruncatedError(ImageError):
    """The file ends before the pixel data does (a partial download or copy)."""

    reason = "image_truncated"


class ImageTooLargeError(ImageError):
    """Width x height is over the pixel budget: a possible decompression bomb, rejected before decoding."""

    reason = "image_too_large"


def load_rgb_image(source: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                   decoding: ImageDecoding = DEFAULT_DECODING) -> Image.Image:
    """Decode `source` (encoded bytes or a file path) to an RGB image, converted as `decoding` says.

    PIL's own bomb check (at Image.MAX_IMAGE_PIXELS) runs first inside `Image.open`, so the effective pixel limit is
    the smaller of the two. A missing path raises FileNotFoundError, not an ImageError: when files are missing it is
    usually the image folder that is wrong, and quarantining every row would hide that.
    """
    if decoding not in IMAGE_DECODINGS:
        raise ValueError(decoding_problem(decoding))
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    with io.BytesIO(source) if in_memory else Path(source).open("rb") as stream:
        image = _open_checked(stream, max_pixels)
        _load_pixels(image)
    if decoding == "llava":
        return convert_like_llava(image)
    return to_rgb(_apply_exif_orientation(image))


def _open_checked(stream: io.BufferedIOBase, max_pixels: int) -> Image.Image:
    """Read the header only and enforce the pixel budget."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; we want a reason, not a log line. (The filter change is
            # process-wide while the header is read; it touches only this warning class.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"image over PIL's pixel limit {Image.MAX_IMAGE_PIXELS}: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageUndecodableError(f"not a recognised image format: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageUndecodableError(f"cannot read image header: {type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over max_pixels={max_pixels}; "
            "raise max_pixels if such images are expected"
        )
    return image


def _load_pixels(image: Image.Image) -> None:
    """Decode the pixels now, while the stream is open, classifying failures."""
    try:
        image.load()
    except OSError as error:
        # PIL reports a short file as "image file is truncated" (JPEG adds the byte count).
        if "truncated" in str(error).lower():
            raise ImageTruncatedError(f"{image.format} {image.size[0]}x{image.size[1]}: {error}") from error
        raise ImageUndecodableError(f"{image.format} pixel data is corrupt: {error}") from error
    except (SyntaxError, ValueError, EOFError) as error:
        raise ImageUndecodableError(f"{image.format} pixel data is corrupt: {type(error).__name__}: {error}") from error


def convert_like_llava(image: Image.Image) -> Image.Image:
    """The official loader's conversion: Pillow's `convert("RGB")`, whatever the mode."""
    if image.mode == "RGB":
        return image
    try:
        with warnings.catch_warnings():
            # Pillow suggests RGBA for a palette with per-entry transparency; the official loader asks for RGB.
            warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
            return image.convert("RGB")
    except ValueError as error:
        raise ImageUndecodableError(f"cannot convert PIL mode {image.mode!r} to RGB: {error}") from error


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the camera's EXIF Orientation tag says, so the model sees what a viewer shows."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError) as error:
        raise ImageUndecodableError(f"corrupt EXIF metadata: {type(error).__name__}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB as a viewer shows it: transparency composited onto white like transformers'
    `convert_to_rgb`; high-bit-depth greyscale rescaled rather than clipped (PIL's convert clips 16-bit values at
    255, turning most of a 16-bit image white)."""
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")  # uint8 (H, W) -> "L" -> RGB
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageUndecodableError(f"cannot convert PIL mode {image.mode!r} to RGB: {error}") from error


def _has_alpha(image: Image.Image) -> bool:
    # Lower-case "a" is PIL's premultiplied alpha (RGBa, La); convert("RGBA") un-premultiplies it.
    return any(band in ("A", "a") for band in image.getbands()) or image.info.get("transparency") is not None


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """'I;16*' and 'I' are read as 16-bit (0..65535 -> 0..255, rounded); 'F' as [0, 1] if it fits, else 0..255."""
    values = np.asarray(image)  # (H, W), uint16 / int32 / float32
    if image.mode == "F":
        values = values.astype(np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    # 65535 / 255 = 257 exactly, so x / 257 maps the 16-bit range onto 8 bits; +128 rounds to nearest.
    clipped = np.clip(values.astype(np.int64), 0, 65535)
    return ((clipped + 128) // 257).astype(np.uint8)

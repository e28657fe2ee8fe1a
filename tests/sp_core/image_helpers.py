"""Images for the image tests, made by Pillow in memory."""

from __future__ import annotations

import io

from PIL import Image

from tests.sp_core.make_clip_torchvision_reference import photo_like


def photo_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields plus fine noise: exercises both the low-pass and the edges of the bicubic kernel."""
    return Image.fromarray(photo_like(width, height, seed))


def encode_as(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()

"""How a shard row stores its (S, S, 3) uint8 crop: the bytes in the `pixel_values` column, their encoding in
`pixel_encoding`. Both encodings give back the very same pixels.

- "webp" (the default): lossless WebP, about 1.4x the size of a photo's source JPEG where the plain bytes take 3-4x;
  it costs some CPU time to write and to read back, in the data tasks (docs/benchmarks.md).
- "raw": the plain bytes, row-major: the fastest to write and to read, the largest on disk.

No torch here: the training reader decodes crops in Ray Data tasks.
"""

from __future__ import annotations

import io
from typing import Literal, get_args

import numpy as np
from PIL import Image, features

PixelStorage = Literal["webp", "raw"]
PIXEL_STORAGES: tuple[str, ...] = get_args(PixelStorage)
DEFAULT_STORAGE: PixelStorage = "webp"

# Lossless WebP's effort settings: files close to the smallest any setting makes, at a fraction of the slower
# settings' encoding time (docs/benchmarks.md).
WEBP_OPTIONS = {"lossless": True, "method": 2, "quality": 0}


def unsupported_storage(storage: PixelStorage) -> str | None:
    """Why this Pillow cannot write `storage`, or None (Pillow may be built without WebP)."""
    if storage == "webp" and not features.check("webp"):
        return "pixel_storage=webp: this Pillow was built without WebP support; use pixel_storage=raw"
    return None


class CropDecodeError(ValueError):
    """A stored crop does not decode to the size its row says."""


def encode_crop(crop: np.ndarray, storage: PixelStorage) -> bytes:
    """(S, S, 3) uint8 -> the bytes a shard stores."""
    if storage == "raw":
        return np.ascontiguousarray(crop).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, "WEBP", **WEBP_OPTIONS)
    return buffer.getvalue()


def decode_crop(data: bytes, encoding: str, size: int) -> bytes:
    """A stored crop -> its S * S * 3 plain bytes, row-major (what "raw" stores)."""
    if encoding == "raw":
        raw = data
    elif encoding == "webp":
        with Image.open(io.BytesIO(data)) as image:
            raw = image.convert("RGB").tobytes() if image.mode != "RGB" else image.tobytes()
    else:
        raise CropDecodeError(f"unknown pixel_encoding {encoding!r}; known: {', '.join(PIXEL_STORAGES)}")
    if len(raw) != size * size * 3:
        raise CropDecodeError(f"a stored crop holds {len(raw)} bytes, not the {size}x{size}x3 its row says")
    return raw

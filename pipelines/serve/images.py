"""image_url parts -> RGB images, with every failure a 4xx APIError that names the image and the problem.

data: URLs (base64) always; http(s) URLs only when the config enables them (fetching arbitrary URLs from a server
is a request-forgery risk). The byte limit is checked before decoding base64 or while downloading, the pixel limit
from the image header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import base64
import binascii

import httpx
from PIL import Image

from pipelines.serve.protocol import APIError, bad_request
from sp_core.image_decoding import ImageError, load_rgb_image
from sp_core.image_options import DEFAULT_DECODING, ImageDecoding


def decode_image_url(url: str, index: int, max_bytes: int, max_pixels: int, allow_remote: bool,
                     timeout_s: float = 10.0, pad_to_square: bool = False,
                     decoding: ImageDecoding = DEFAULT_DECODING) -> Image.Image:
    """The image of the request's `index`-th image part. With pad_to_square (LLaVA-1.5's "pad" preprocessing) the
    pixel limit also holds for the square canvas the image is padded onto: a 1 x 9500 image costs 9500 x 9500."""
    where = f"image {index}"
    if url.startswith("data:"):
        data = _data_url_bytes(url, where, max_bytes)
    elif url.startswith(("http://", "https://")):
        if not allow_remote:
            raise bad_request(f"{where}: remote image URLs are disabled on this server; send the image inline as a "
                              "data:image/...;base64, URL (or start the server with allow_remote_images=true)",
                              "remote_images_disabled", "messages")
        data = _download(url, where, max_bytes, timeout_s)
    else:
        raise bad_request(f"{where}: image_url must be a data: URL (or http(s) when enabled), got {url[:40]!r}",
                          "invalid_image_url", "messages")
    try:
        image = load_rgb_image(data, max_pixels=max_pixels, decoding=decoding)
    except ImageError as error:
        raise bad_request(f"{where}: {error.reason}: {error}", error.reason, "messages") from error
    side = max(image.size)
    if pad_to_square and side * side > max_pixels:
        width, height = image.size
        raise bad_request(f"{where}: image_too_large: the image is {width}x{height}, and padded to a square for the "
                          f"model it is {side}x{side} = {side * side} pixels, over max_pixels={max_pixels}",
                          "image_too_large", "messages")
    return image


def _data_url_bytes(url: str, where: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise bad_request(f"{where}: a data URL must look like data:image/png;base64,<data>", "invalid_image_url",
                          "messages")
    # 4 base64 characters carry 3 bytes: refuse oversized images before decoding them.
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(where, len(payload) * 3 // 4, max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise bad_request(f"{where}: the data URL is not valid base64: {error}", "invalid_base64", "messages") from error


def _download(url: str, where: str, max_bytes: int, timeout_s: float) -> bytes:
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise bad_request(f"{where}: fetching {url} gave HTTP {response.status_code}", "image_fetch_failed",
                                  "messages")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(where, size, max_bytes)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as error:
        raise bad_request(f"{where}: fetching {url} failed: {error}", "image_fetch_failed", "messages") from error


def _too_large(where: str, size: int, max_bytes: int) -> APIError:
    return APIError(413, f"{where} is over the byte limit: at least {size} bytes > max_image_bytes={max_bytes}",
                    "image_too_many_bytes", "messages")

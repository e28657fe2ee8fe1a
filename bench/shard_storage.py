"""Bytes per shard row, write cost and training-read cost of each way to store the crops, side by side in one run.

    .venv/bin/python -m bench.shard_storage [--images 40] [--images-dir DIR] [--repeats 3]

Source images: --images photo-like 640x480 JPEGs (quality 90, smooth colour fields plus noise) made here, or every
JPEG/PNG file in --images-dir (real photos compress differently: measure on your own). Each image goes through the
default preprocessing (LLaVA decoding, pad, Pillow's resize) to its 336x336 uint8 crop; then, for each storage:

- raw / snappy: the plain bytes in parquet with Ray Data's default compression (`pixel_storage=raw`);
- raw / zstd-3: the same with parquet's zstd;
- webp: lossless WebP, the default (`pixel_storage=webp`);
- png: lossless PNG (Pillow's default level), for comparison;
- source: the source file's bytes, with decoding, padding and resizing moved to the training reader (not offered:
  a camera's 12-megapixel JPEG is 40 times a crop, and the reader would redo the preprocessing every epoch).

Write = encoding + parquet write, read = parquet read + back to the plain crop (what the training reader does), per
row on one core, best of --repeats. Every storage is checked to give back the very pixels. Asserts nothing on time.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipelines.data.pixel_storage import decode_crop, encode_crop
from sp_core.image_decoding import load_rgb_image
from sp_core.image_processing import LlavaSPImageProcessor

SIZE = 336


def photo_like_jpegs(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def files_in(directory: Path) -> list[bytes]:
    paths = sorted(path for path in directory.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise SystemExit(f"no .jpg/.jpeg/.png files in {directory}")
    return [path.read_bytes() for path in paths]


def png_bytes(crop: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, "PNG")
    return buffer.getvalue()


def png_plain(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.tobytes()


def measure(name: str, encode: Callable[[int], bytes], to_plain: Callable[[bytes, int], bytes], rows: int,
            compression: str, expected: list[bytes], repeats: int) -> dict[str, float]:
    """Bytes per row, and the best write (encode + parquet) and read (parquet + back to plain) ms per row."""
    write = read = float("inf")
    for _ in range(repeats):
        buffer = io.BytesIO()
        started = time.perf_counter()
        column = pa.array([encode(index) for index in range(rows)], pa.binary())
        pq.write_table(pa.table({"pixel_values": column}), buffer, row_group_size=32, compression=compression)
        write = min(write, time.perf_counter() - started)
        started = time.perf_counter()
        stored = pq.read_table(pa.BufferReader(buffer.getvalue())).column(0).to_pylist()
        plain = [to_plain(data, index) for index, data in enumerate(stored)]
        read = min(read, time.perf_counter() - started)
        if plain != expected:
            raise AssertionError(f"{name} does not give back the same pixels")
    return {"bytes": buffer.tell() / rows, "write_ms": 1000 * write / rows, "read_ms": 1000 * read / rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="photo-like JPEGs to make (without --images-dir)")
    parser.add_argument("--images-dir", type=Path, help="measure on the JPEG/PNG files of this folder instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    sources = files_in(args.images_dir) if args.images_dir else photo_like_jpegs(args.images)
    processor = LlavaSPImageProcessor(image_size=SIZE)
    crops = [processor.to_uint8(load_rgb_image(data)) for data in sources]
    expected = [crop.tobytes() for crop in crops]
    rows = len(crops)
    storages = {
        "raw / snappy": (lambda i: encode_crop(crops[i], "raw"), lambda data, i: decode_crop(data, "raw", SIZE),
                         "snappy"),
        "raw / zstd-3": (lambda i: encode_crop(crops[i], "raw"), lambda data, i: decode_crop(data, "raw", SIZE),
                         "zstd"),
        "webp (default)": (lambda i: encode_crop(crops[i], "webp"), lambda data, i: decode_crop(data, "webp", SIZE),
                           "snappy"),
        "png": (lambda i: png_bytes(crops[i]), lambda data, i: png_plain(data), "snappy"),
        "source": (lambda i: sources[i], lambda data, i: processor.to_uint8(load_rgb_image(data)).tobytes(),
                   "snappy"),
    }
    source_bytes = sum(len(data) for data in sources) / rows
    print(f"{rows} images, source files {source_bytes / 1000:.1f} KB on average, {SIZE}x{SIZE} crops "
          f"({SIZE * SIZE * 3 / 1000:.1f} KB plain); per row, one core, best of {args.repeats}:")
    print(f"{'storage':<16} {'KB/row':>8} {'x source':>9} {'write ms':>9} {'read ms':>8}")
    for name, (encode, to_plain, compression) in storages.items():
        result = measure(name, encode, to_plain, rows, compression, expected, args.repeats)
        print(f"{name:<16} {result['bytes'] / 1000:>8.1f} {result['bytes'] / source_bytes:>9.2f} "
              f"{result['write_ms']:>9.2f} {result['read_ms']:>8.2f}")


if __name__ == "__main__":
    main()
